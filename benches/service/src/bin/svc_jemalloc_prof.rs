//! The service on jemalloc with its heap profiler sampling every 512 KiB
//! (`lg_prof_sample:19`), served through jemalloc_pprof as its README shows:
//! `GET /debug/pprof/allocs` answers `PROF_CTL`'s `dump_pprof()`.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it initialises (the README's line).
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";

async fn handle_get_heap() -> Result<impl IntoResponse, (StatusCode, String)> {
    let mut prof_ctl = jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or((StatusCode::INTERNAL_SERVER_ERROR, "no PROF_CTL".to_string()))?
        .lock()
        .await;
    require_profiling_activated(&prof_ctl)?;
    let pprof = prof_ctl
        .dump_pprof()
        .map_err(|err| (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    Ok(pprof)
}

fn require_profiling_activated(
    prof_ctl: &jemalloc_pprof::JemallocProfCtl,
) -> Result<(), (StatusCode, String)> {
    if prof_ctl.activated() {
        Ok(())
    } else {
        Err((StatusCode::FORBIDDEN, "heap profiling not activated".into()))
    }
}

fn main() -> std::io::Result<()> {
    allocscope_service_bench::run(
        axum::Router::new().route("/debug/pprof/allocs", get(handle_get_heap)),
    )
}
