//! Scenario: `Config::load()` from the real process environment and a real
//! file, then `start()` applying it. One test: it sets environment
//! variables, which are process-wide.
use std::time::Duration;

use allocscope::server::{self, Config};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

#[test]
fn load_file_then_environment_and_apply() {
    let dir = std::env::temp_dir().join(format!("allocscope-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("allocscope.toml");
    std::fs::write(
        &file,
        "# a service's file\naddr = \"127.0.0.1:1\"\nsample_interval = \"64KiB\"\n\
         log_interval = \"250ms\"\n",
    )
    .unwrap();
    std::env::set_var("ALLOCSCOPE_CONFIG", &file);
    std::env::set_var("ALLOCSCOPE_ADDR", "127.0.0.1:0"); // the environment wins
    let c = Config::load().expect("load");
    assert_eq!(c.addr, "127.0.0.1:0".parse().unwrap());
    assert_eq!(c.sample_interval, 64 * 1024);
    assert_eq!(c.log_interval, Duration::from_millis(250));

    let s = server::start(c).expect("start");
    assert_eq!(
        allocscope::sample_interval(),
        64 * 1024,
        "start() applies it"
    );
    assert_ne!(s.local_addr().port(), 0);
    s.shutdown();

    // A bad value in the environment names key, value and what is accepted.
    std::env::set_var("ALLOCSCOPE_SAMPLE_INTERVAL", "half a meg");
    let e = Config::load().unwrap_err().to_string();
    assert!(
        e.contains("sample_interval") && e.contains("half a meg") && e.contains("KiB"),
        "{e}"
    );
    std::env::remove_var("ALLOCSCOPE_SAMPLE_INTERVAL");

    // A named file must exist.
    std::env::set_var("ALLOCSCOPE_CONFIG", dir.join("missing.toml"));
    let e = Config::load().unwrap_err().to_string();
    assert!(e.contains("missing.toml"), "{e}");

    // A malformed file names itself.
    std::fs::write(&file, "addr = \"127.0.0.1:0\"\nthis is not toml\n").unwrap();
    std::env::set_var("ALLOCSCOPE_CONFIG", &file);
    let e = Config::load().unwrap_err().to_string();
    assert!(e.contains("allocscope.toml"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
