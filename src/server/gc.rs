//! `/gc` and `/gc/collect`: the collector's state and controls as JSON.
//!
//! Owns the parameters, the JSON documents and the error texts of these
//! endpoints. Reads [`crate::gc::stats`] and [`crate::gc::cycles`] and
//! calls the collector's setters; a manual cycle runs on a blocking thread,
//! never on an async worker.
//!
//! - `GET /gc` → `{"threshold":100,"heap_goal_bytes":…,"live_bytes":…,
//!   "memory_limit_bytes":null,"cycles":17,…,"last_cycles":[…]}`
//! - `POST /gc?set=200` → `{"threshold":200,"previous":100}`; `set=off`.
//! - `POST /gc?memory_limit=2GiB` (or `off`, or `auto`: 0.9 of the
//!   container's limit) →
//!   `{"memory_limit_bytes":2147483648,"previous_memory_limit_bytes":null}`;
//!   `GET /gc` then says where the limit came from (`memory_limit_source`).
//! - `POST /gc/collect` → the cycle's record.
//!
//! Every error of these paths is JSON, `{"error":"…"}`, with the status
//! the pipeline or the handler chose.

use std::time::UNIX_EPOCH;

use warp::http::{header, HeaderValue, Method, StatusCode};

use super::config::{parse_limit, parse_threshold, MEMORY_LIMIT_EXPECTED, THRESHOLD_EXPECTED};
use super::{parse_query, Reply};
use crate::gc::{Cycle, LimitSource, MemoryLimit, Stats as CollectionStats};

/// How many cycles `GET /gc` lists (newest first).
pub(crate) const LAST_CYCLES: usize = 16;

const PARAMS: &str = "POST /gc takes set=<percent>|off (the threshold, e.g. set=200) and \
     memory_limit=<size>|off|auto (e.g. memory_limit=2GiB; auto: 0.9 of the container's limit)";

/// A JSON object written in the order its fields are added.
pub(crate) struct Obj(String);

impl Obj {
    pub(crate) fn new() -> Obj {
        Obj(String::from("{"))
    }

    pub(crate) fn field(mut self, key: &str, value: impl serde::Serialize) -> Obj {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        // Strings and numbers cannot fail to serialise.
        self.0
            .push_str(&serde_json::to_string(key).unwrap_or_default());
        self.0.push(':');
        self.0
            .push_str(&serde_json::to_string(&value).unwrap_or_else(|_| "null".into()));
        self
    }

    /// A field whose value is already JSON.
    pub(crate) fn raw(mut self, key: &str, json: &str) -> Obj {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0
            .push_str(&serde_json::to_string(key).unwrap_or_default());
        self.0.push(':');
        self.0.push_str(json);
        self
    }

    pub(crate) fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// `u64::MAX` (no goal) as `null`.
fn bytes(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

/// One cycle's record as JSON.
pub(crate) fn cycle_json(c: &Cycle) -> String {
    let start = c
        .start
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Obj::new()
        .field("number", c.number)
        .field("reason", c.reason.as_str())
        .field("start_unix_seconds", start)
        .field("duration_seconds", c.duration.as_secs_f64())
        .field("threshold", c.threshold)
        .field("goal_bytes", bytes(c.goal_bytes))
        .field("memory_limit_bytes", c.memory_limit)
        .field("live_bytes_before", c.live_bytes_before)
        .field("live_bytes_after", c.live_bytes_after)
        .field("resident_bytes_before", c.resident_bytes_before)
        .field("resident_bytes_after", c.resident_bytes_after)
        .field("released_to_os", c.released_to_os)
        .field("released_bytes", c.released_bytes)
        .field("reclaimed_bytes", c.reclaimed_bytes)
        .field("reclaimers", c.reclaimers)
        .field("reclaimer_panics", c.reclaimer_panics)
        .field("next_goal_bytes", bytes(c.next_goal_bytes))
        .finish()
}

/// The `GET /gc` document.
pub(crate) fn state_json(s: &CollectionStats, cycles: &[Cycle]) -> String {
    let last: Vec<String> = cycles
        .iter()
        .rev()
        .take(LAST_CYCLES)
        .map(cycle_json)
        .collect();
    let by_reason = crate::gc::CycleReason::ALL
        .iter()
        .fold(Obj::new(), |o, r| o.field(r.as_str(), s.cycles_for(*r)))
        .finish();
    let o = Obj::new()
        .field("threshold", s.threshold)
        .field("heap_goal_bytes", bytes(s.heap_goal))
        .field("live_bytes", s.live_bytes)
        .field("memory_limit_bytes", s.memory_limit);
    limit_json(o, &crate::gc::limit_source())
        .field("cycles", s.cycles())
        .raw("cycles_by_reason", &by_reason)
        .field("skipped_triggers", s.skipped_triggers)
        .field("total_duration_seconds", s.total_duration.as_secs_f64())
        .field("released_bytes", s.released_bytes)
        .field("reclaimed_bytes", s.reclaimed_bytes)
        .field("reclaimer_panics", s.reclaimer_panics)
        .field("reclaimers", s.reclaimers)
        .field("release_to_os", s.release_to_os.as_str())
        .field("collector_time_share", s.time_share)
        .field("near_limit_profiles", s.near_limit_profiles)
        .field(
            "memory_limit_exceeded_seconds",
            s.limit_exceeded.as_secs_f64(),
        )
        .field("memory_limit_backoffs", s.limit_backoffs)
        .field("memory_limit_paused", s.limit_paused)
        .field("collector_running", s.collector_running)
        .raw("last_cycles", &format!("[{}]", last.join(",")))
        .finish()
}

fn json(status: StatusCode, body: String) -> Reply {
    let mut body = body.into_bytes();
    body.push(b'\n');
    Reply::new(status, "application/json", body)
}

/// A JSON error: `{"error":"…"}`.
pub(crate) fn error(status: u16, message: &str) -> Reply {
    json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Obj::new().field("error", message.trim_end()).finish(),
    )
}

impl Reply {
    /// The same error as JSON, keeping its status and the headers that
    /// matter to clients (`Allow`, `WWW-Authenticate`).
    pub(crate) fn into_json_error(self) -> Reply {
        let is_json = self
            .headers
            .iter()
            .any(|(k, v)| k == header::CONTENT_TYPE && v == "application/json");
        if is_json {
            return self;
        }
        let text = String::from_utf8_lossy(&self.body).into_owned();
        let mut r = error(self.status.as_u16(), &text);
        r.headers.extend(
            self.headers
                .into_iter()
                .filter(|(k, _)| k == header::ALLOW || k == header::WWW_AUTHENTICATE),
        );
        r
    }
}

/// Whether a `GET` (or `HEAD`) of `/gc` carries a change: it gets 405.
pub(crate) fn read_with_change(method: &Method, query: &str) -> Option<Reply> {
    if method == Method::POST {
        return None;
    }
    let q = parse_query(query).ok()?;
    let key = q
        .iter()
        .map(|(k, _)| k.as_str())
        .find(|k| *k == "set" || *k == "memory_limit")?;
    let mut r = error(
        405,
        &format!(
            "method {method} cannot change {key}: GET /gc only reads the state; use POST, \
             e.g. curl -X POST '/gc?set=200'"
        ),
    );
    r.headers
        .push((header::ALLOW, HeaderValue::from_static("POST")));
    Some(r)
}

/// `GET /gc`.
pub(crate) fn get(q: &[(String, String)]) -> Reply {
    if let Some((k, _)) = q.first() {
        return error(
            400,
            &format!(
                "unknown parameter {k:?}: GET /gc takes no parameters; {PARAMS}; \
                 POST /gc/collect runs a cycle"
            ),
        );
    }
    json(
        StatusCode::OK,
        state_json(&crate::gc::stats(), &crate::gc::cycles()),
    )
}

/// The parameters of `POST /gc`, all checked, none applied: `set` and
/// `memory_limit` (outer `None`: not given). Pure (the fuzz target `query`
/// calls it).
#[allow(clippy::type_complexity)]
pub(crate) fn post_params(
    q: &[(String, String)],
) -> Result<(Option<Option<u32>>, Option<MemoryLimit>), Reply> {
    let mut set: Option<Option<u32>> = None;
    let mut limit: Option<MemoryLimit> = None;
    for (k, v) in q {
        match k.as_str() {
            "set" if set.is_some() => return Err(error(400, "parameter \"set\" given twice")),
            "memory_limit" if limit.is_some() => {
                return Err(error(400, "parameter \"memory_limit\" given twice"))
            }
            "set" => set = Some(param("set", v, parse_threshold, THRESHOLD_EXPECTED)?),
            "memory_limit" => {
                limit = Some(param(
                    "memory_limit",
                    v,
                    |v| parse_limit(v).ok_or(()),
                    MEMORY_LIMIT_EXPECTED,
                )?)
            }
            _ => return Err(error(400, &format!("unknown parameter {k:?}: {PARAMS}"))),
        }
    }
    if set.is_none() && limit.is_none() {
        return Err(error(
            400,
            &format!(
                "nothing to change: {PARAMS}; GET /gc reads the state, POST /gc/collect runs \
                 a cycle"
            ),
        ));
    }
    Ok((set, limit))
}

/// One parameter's value through its parser; a 400 saying what is
/// accepted otherwise.
fn param<T, E>(
    name: &str,
    value: &str,
    parse: fn(&str) -> Result<T, E>,
    expected: &str,
) -> Result<T, Reply> {
    parse(value).map_err(|_| {
        error(
            400,
            &format!("invalid {name} {value:?}: expected {expected}"),
        )
    })
}

/// `POST /gc?set=…&memory_limit=…`: every value is checked before any is
/// applied.
pub(crate) fn post(q: &[(String, String)]) -> Reply {
    let (set, limit) = match post_params(q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    // The limit first: its setter is the one that can refuse (post_params
    // has already refused what it refuses), and nothing is applied then.
    let previous_limit = crate::gc::memory_limit();
    let applied = match limit
        .map(|l| l.apply(crate::gc::DEFAULT_AUTO_RATIO))
        .transpose()
    {
        Ok(a) => a,
        Err(e) => return error(400, &e.to_string()),
    };
    let mut o = Obj::new();
    if let Some(t) = set {
        let previous = crate::gc::set_threshold(t);
        o = o.field("threshold", t).field("previous", previous);
    }
    if let Some(now) = applied {
        o = o
            .field("memory_limit_bytes", now)
            .field("previous_memory_limit_bytes", previous_limit);
    }
    json(StatusCode::OK, o.finish())
}

/// The `memory_limit_source` and `container` fields of `GET /gc`: where the
/// soft limit came from, and the container's memory where it can be read.
fn limit_json(o: Obj, source: &LimitSource) -> Obj {
    let container = match source {
        LimitSource::Container { container, .. } => container.clone(),
        _ => crate::gc::container_memory(),
    };
    let ratio = match source {
        LimitSource::Container { ratio, .. } => Some(*ratio),
        _ => None,
    };
    let container = container.map_or_else(
        || "null".to_string(),
        |c| {
            Obj::new()
                .field("cgroup", c.version.as_str())
                .field("path", c.path.display().to_string().as_str())
                .field("limit_bytes", c.limit_bytes)
                .field("usage_bytes", c.usage_bytes)
                .finish()
        },
    );
    o.field("memory_limit_source", source.as_str())
        .field("memory_limit_ratio", ratio)
        .raw("container", &container)
}

/// `POST /gc/collect`: runs a cycle on a blocking thread and returns its
/// record.
pub(crate) async fn collect(q: &[(String, String)]) -> Reply {
    if let Some((k, _)) = q.first() {
        return error(
            400,
            &format!("unknown parameter {k:?}: POST /gc/collect takes no parameters"),
        );
    }
    match tokio::task::spawn_blocking(|| crate::scope::ALLOCSCOPE.within(crate::gc::collect)).await
    {
        Ok(c) => json(StatusCode::OK, cycle_json(&c)),
        Err(e) => error(500, &format!("the collection cycle failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        parse_query(s).unwrap()
    }

    #[test]
    fn objects_keep_their_order() {
        let o = Obj::new()
            .field("threshold", Some(100u32))
            .field("b", None::<u64>)
            .raw("c", "[1]")
            .field("s", "x\"y")
            .finish();
        assert_eq!(o, r#"{"threshold":100,"b":null,"c":[1],"s":"x\"y"}"#);
    }

    #[test]
    fn bad_posts_change_nothing() {
        for (query, needle) in [
            ("", "nothing to change"),
            ("set=", "off"),
            ("set=-1", "percent"),
            ("set=abc", "percent"),
            ("set=1.5", "percent"),
            ("set=99999999999", "percent"),
            ("memory_limit=", "GiB"),
            ("memory_limit=-5MiB", "GiB"),
            ("memory_limit=2GB", "GiB"),
            ("memory_limit=0", "off"),
            ("memory_limit=99999999999999999999", "GiB"),
            ("set=100&set=200", "twice"),
            ("nope=1", "set=<percent>"),
            ("set=200&memory_limit=lots", "GiB"),
        ] {
            let r = post(&q(query));
            assert_eq!(r.status, 400, "{query}");
            let body = String::from_utf8(r.body).unwrap();
            assert!(body.starts_with("{\"error\":"), "{body}");
            assert!(body.contains(needle), "{query}: {body}");
        }
    }
}
