//! Detects whether allocscope is being built with frame pointers, to pick
//! the default stack capture method (see `src/sampling/stack.rs`).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(allocscope_frame_pointers)");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let args: Vec<&str> = flags.split('\x1f').collect();
    let mut fp = false;
    for (i, a) in args.iter().enumerate() {
        let opt = if let Some(rest) = a.strip_prefix("-C") {
            if rest.is_empty() {
                args.get(i + 1).copied().unwrap_or("")
            } else {
                rest
            }
        } else if *a == "--codegen" {
            args.get(i + 1).copied().unwrap_or("")
        } else {
            a.strip_prefix("--codegen=").unwrap_or("")
        };
        if let Some(v) = opt.strip_prefix("force-frame-pointers") {
            fp = matches!(v, "" | "=yes" | "=y" | "=on" | "=true" | "=always");
        }
    }
    if fp {
        println!("cargo::rustc-cfg=allocscope_frame_pointers");
    }
}
