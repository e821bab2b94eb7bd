//! The load generator.
//!
//! - `svc_load ADDR COUNT [CONNECTIONS] [START]`: sends requests
//!   `START..START+COUNT` of the deterministic load (`load::request`) to the
//!   service at ADDR (`127.0.0.1:PORT`) over CONNECTIONS keep-alive
//!   connections (default 1) and prints `requests=` and `seconds=`.
//! - `svc_load --wrk-script`: prints the same requests as a wrk Lua script.
//! - `svc_load --get ADDR PATH`: prints the body of `GET PATH`.

use std::net::SocketAddr;
use std::time::Instant;

use allocscope_service_bench::load;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--wrk-script") => print!("{}", load::wrk_script()),
        Some("--get") if args.len() == 3 => {
            let addr: SocketAddr = args[1].parse()?;
            let body = load::Conn::open(addr)?.get(&args[2])?;
            print!("{}", String::from_utf8_lossy(&body));
        }
        Some(addr) if args.len() >= 2 => {
            let addr: SocketAddr = addr.parse()?;
            let count: u64 = args[1].parse()?;
            let conns: u64 = args.get(2).map_or(Ok(1), |a| a.parse())?;
            let start: u64 = args.get(3).map_or(Ok(0), |a| a.parse())?;
            let t = Instant::now();
            load::drive(addr, start, count, conns)?;
            println!("requests={count}");
            println!("seconds={:.3}", t.elapsed().as_secs_f64());
        }
        _ => {
            eprintln!(
                "usage: svc_load ADDR COUNT [CONNECTIONS] [START] | --wrk-script | --get ADDR PATH"
            );
            std::process::exit(2);
        }
    }
    Ok(())
}
