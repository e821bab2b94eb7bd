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
         log_interval = \"250ms\"\nheader_read_timeout = \"5s\"\nmax_connections = 64\n\
         max_scopes = 100\n",
    )
    .unwrap();
    std::env::set_var("ALLOCSCOPE_CONFIG", &file);
    std::env::set_var("ALLOCSCOPE_ADDR", "127.0.0.1:0"); // the environment wins
    std::env::set_var("ALLOCSCOPE_IDLE_TIMEOUT", "2m");
    let c = Config::load().expect("load");
    assert_eq!(c.addr, "127.0.0.1:0".parse().unwrap());
    assert_eq!(c.sample_interval, 64 * 1024);
    assert_eq!(c.log_interval, Duration::from_millis(250));
    assert_eq!(c.header_read_timeout, Duration::from_secs(5));
    assert_eq!(c.idle_timeout, Duration::from_secs(120));
    assert_eq!(c.max_connections, 64);
    assert_eq!(c.max_scopes, 100);
    std::env::remove_var("ALLOCSCOPE_IDLE_TIMEOUT");

    let s = server::start(c).expect("start");
    assert_eq!(
        allocscope::sampling::interval(),
        64 * 1024,
        "start() applies it"
    );
    assert_eq!(
        allocscope::scope::max_scopes(),
        100,
        "start() applies max_scopes"
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

    // The connection keys: out of range is an error naming the key, the
    // value and the range, and start() refuses such a configuration.
    for (key, value, range) in [
        ("HEADER_READ_TIMEOUT", "0", "1s to 5m"),
        ("HEADER_READ_TIMEOUT", "10m", "1s to 5m"),
        ("IDLE_TIMEOUT", "500ms", "1s to 1h"),
        ("IDLE_TIMEOUT", "forever", "1s to 1h"),
        ("MAX_CONNECTIONS", "0", "1 to 65536"),
        ("MAX_CONNECTIONS", "1e6", "1 to 65536"),
        ("MAX_SCOPES", "0", "1 to 509"),
        ("MAX_SCOPES", "510", "1 to 509"),
        ("MAX_SCOPES", "many", "1 to 509"),
    ] {
        let var = format!("ALLOCSCOPE_{key}");
        std::env::set_var(&var, value);
        let e = Config::load().unwrap_err();
        let text = e.to_string();
        let name = key.to_ascii_lowercase();
        assert!(
            matches!(&e, allocscope::Error::InvalidArgument { what, .. } if *what == name),
            "{var}={value}: {e:?}"
        );
        assert!(
            text.contains(&name) && text.contains(value) && text.contains(range),
            "{var}={value}: {text}"
        );
        std::env::remove_var(&var);
    }
    let e = server::start(
        Config::default()
            .addr("127.0.0.1:0".parse().unwrap())
            .idle_timeout(Duration::ZERO),
    )
    .unwrap_err();
    assert!(e.to_string().contains("idle_timeout"), "{e}");

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
