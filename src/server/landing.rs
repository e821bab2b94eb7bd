//! `/`: the landing page. Live numbers, links to every view, the heap
//! flamegraph. Plain HTML with inline CSS, JS and SVG: no external assets,
//! since the service may be offline.
//!
//! Owns the page only. The numbers refresh by reading `/metrics` (open even
//! with a token) and `/gc` (the collector's state); the flamegraph is
//! `/debug/pprof/heap.svg` embedded; the leak suspects are the exporter's
//! newest report (`super::leaks`). The threshold form and the "collect
//! now" button POST to `/gc?set=…` and `/gc/collect`. The "Memory by
//! scope" and "Allocation by thread group" tables read
//! [`crate::scope::stats`] and [`crate::threads::stats`]; their rates are
//! taken against the previous sample the exporter kept ([`Rates`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::log::{mib, LogSample};
use super::{encode_query_value, Reply, State};

pub(crate) use crate::profile::xml_escape as escape;

/// A size in the largest binary unit that divides it (`512 KiB`, `3 B`).
pub(crate) fn size(mut b: u64) -> String {
    let mut unit = 0;
    while b >= 1024 && b.is_multiple_of(1024) && unit < 3 {
        b /= 1024;
        unit += 1;
    }
    format!("{b} {}", ["B", "KiB", "MiB", "GiB"][unit])
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}\
header{background:#2b3a55;color:#fff;padding:.8em 1.5em}header h1{margin:0;font-size:1.3em}\
header span{opacity:.8;font-size:.9em}main{padding:1em 1.5em}\
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{background:#fff;border:1px solid #ddd;\
border-radius:6px;padding:.6em 1em;min-width:9em}.card b{display:block;font-size:1.4em}\
.card small{color:#666}#spark{background:#fff;border:1px solid #ddd;border-radius:6px}\
ul{columns:2;max-width:60em}li{margin:.2em 0}a{color:#1a5fb4}code{background:#eee;padding:0 .2em}\
.note{background:#fff3cd;border:1px solid #e0c96b;padding:.6em 1em;border-radius:6px}\
object{width:100%;min-height:480px;border:1px solid #ddd;background:#fff}\
table{border-collapse:collapse;background:#fff;font-size:.9em}td,th{border:1px solid #ddd;\
padding:.2em .6em;text-align:right}th{background:#f0f0f0}#gcresult{margin-left:.6em;color:#555}";

const SCRIPT: &str = r#"
(function(){
  var hist=[], last=null;
  function mib(b){return (b/1048576).toFixed(1)+' MiB';}
  function size(b){var u=['B','KiB','MiB','GiB'],i=0;while(b>=1024&&i<3&&b%1024===0){b/=1024;i++;}return b+' '+u[i];}
  function parse(t){var m={};t.split('\n').forEach(function(l){
    if(!l||l[0]==='#'||l.indexOf('{')>=0)return;var p=l.split(' ');m[p[0]]=parseFloat(p[1]);});return m;}
  function set(id,v){var e=document.getElementById(id);if(e)e.textContent=v;}
  function spark(){var w=300,h=60,max=Math.max.apply(null,hist.concat([1])),pts=hist.map(function(v,i){
    return (i*w/59).toFixed(1)+','+(h-2-(v/max)*(h-4)).toFixed(1);}).join(' ');
    document.getElementById('line').setAttribute('points',pts);set('sparkmax','max '+mib(max));}
  function tick(){fetch('/metrics').then(function(r){return r.text();}).then(function(t){
    var m=parse(t),now=Date.now();
    set('live',mib(m.allocscope_heap_live_bytes||0));
    set('objects',(m.allocscope_heap_live_objects||0)+' objects');
    if(m.process_resident_memory_bytes!==undefined)set('rss',mib(m.process_resident_memory_bytes));
    if(m.process_threads!==undefined)set('threads',m.process_threads);
    set('interval',m.allocscope_sampler_interval_bytes===0?'off':size(m.allocscope_sampler_interval_bytes||0));
    set('samples',(m.allocscope_sampler_live_samples||0)+' live samples');
    if(last){var dt=(now-last.t)/1000;set('rate',Math.round((m.allocscope_heap_allocations_total-last.a)/dt));}
    last={t:now,a:m.allocscope_heap_allocations_total};
    hist.push(m.allocscope_heap_live_bytes||0);if(hist.length>60)hist.shift();spark();
    set('status','updated '+new Date().toLocaleTimeString());
  }).catch(function(e){set('status','cannot read /metrics: '+e);});}
  function gbytes(b){return b===null?'none':mib(b);}
  function cycles(list){var tb=document.getElementById('cycles');if(!tb)return;
    while(tb.firstChild)tb.removeChild(tb.firstChild);
    list.slice(0,10).forEach(function(c){var tr=document.createElement('tr');
      [c.number,c.reason,new Date(c.start_unix_seconds*1000).toLocaleTimeString(),gbytes(c.goal_bytes),
       mib(c.live_bytes_before)+' \u2192 '+mib(c.live_bytes_after),mib(c.released_bytes),mib(c.reclaimed_bytes),
       (c.duration_seconds*1000).toFixed(2)+' ms'].forEach(function(v){
        var td=document.createElement('td');td.textContent=v;tr.appendChild(td);});tb.appendChild(tr);});}
  function gc(){fetch('/gc').then(function(r){return r.json();}).then(function(g){
    set('gc_threshold',g.threshold===null?'off':g.threshold+'%');
    set('gc_goal','heap goal '+gbytes(g.heap_goal_bytes));
    set('gc_limit',g.memory_limit_bytes===null?'off':mib(g.memory_limit_bytes));
    set('collections',g.cycles);
    set('collections_sub',g.last_cycles.length?'last: '+g.last_cycles[0].reason:'none yet');
    cycles(g.last_cycles);}).catch(function(){});}
  function post(url){fetch(url,{method:'POST'}).then(function(r){return r.json();}).then(function(j){
    set('gcresult',j.error?j.error:JSON.stringify(j));gc();}).catch(function(e){set('gcresult',''+e);});}
  var form=document.getElementById('gcform');
  if(form)form.addEventListener('submit',function(e){e.preventDefault();
    post('/gc?set='+encodeURIComponent(document.getElementById('gcset').value.trim()));});
  var now=document.getElementById('gcnow');
  if(now)now.addEventListener('click',function(){post('/gc/collect');});
  gc();setInterval(gc,2000);
  var sel=document.getElementById('sample');
  if(sel)sel.addEventListener('change',function(){
    document.getElementById('fg').setAttribute('data','/debug/pprof/heap.svg?sample='+sel.value);});
  tick();setInterval(tick,2000);
})();
"#;

/// One reading of the per-scope and per-thread-group counters, for rates.
#[derive(Debug)]
struct UsageSample {
    at: Instant,
    /// (scope, allocations, allocated bytes)
    scopes: Vec<(String, u64, u64)>,
    /// (group, allocations, allocated bytes, deallocations)
    groups: Vec<(String, u64, u64, u64)>,
}

impl UsageSample {
    fn of(
        at: Instant,
        scopes: &[crate::scope::ScopeStats],
        groups: &[crate::threads::GroupStats],
    ) -> UsageSample {
        UsageSample {
            at,
            scopes: scopes
                .iter()
                .map(|s| (s.name.to_string(), s.allocations, s.allocated_bytes))
                .collect(),
            groups: groups
                .iter()
                .map(|g| {
                    (
                        g.name.clone(),
                        g.allocations,
                        g.allocated_bytes,
                        g.deallocations,
                    )
                })
                .collect(),
        }
    }
}

/// The landing page has no history of its own: the exporter keeps the
/// counters as they were at its start, then at the last view of the page
/// at least [`RATE_MIN_WINDOW`] earlier, and the tables' rates are taken
/// against that sample (the page says over how long).
#[derive(Debug)]
pub(crate) struct Rates(Mutex<UsageSample>);

/// The shortest window a rate is taken over: a view sooner after the
/// previous one is compared with the older sample.
const RATE_MIN_WINDOW: Duration = Duration::from_secs(2);

impl Rates {
    /// The counters now, as the first sample (at the exporter's start).
    pub(crate) fn new() -> Rates {
        Rates(Mutex::new(UsageSample::of(
            Instant::now(),
            &crate::scope::stats(),
            &crate::threads::stats(),
        )))
    }
}

/// Per second over `secs`, 0 for an empty window or a counter that went
/// back (it does not; never a negative rate).
fn per_sec(now: u64, before: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        now.saturating_sub(before) as f64 / secs
    } else {
        0.0
    }
}

/// Bytes in the largest binary unit below them, one decimal (`1.5 MiB`).
fn bytes(b: f64) -> String {
    let mut v = b;
    let mut unit = 0;
    while v >= 1024.0 && unit < 3 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", ["B", "KiB", "MiB", "GiB"][unit])
    }
}

/// A name cell: the name, linked to its filtered flamegraph when profiles
/// are visible (`param` is `scope` or `thread`).
fn name_cell(name: &str, param: &str, class: &str, link: bool) -> String {
    if link {
        format!(
            "<td style=\"text-align:left\"><a class=\"{class}\" \
             href=\"/debug/pprof/heap.svg?{param}={}\">{}</a></td>",
            encode_query_value(name),
            escape(name)
        )
    } else {
        format!("<td style=\"text-align:left\">{}</td>", escape(name))
    }
}

/// A rate cell, linked to the allocated-bytes flamegraph of the scope or
/// group when profiles are visible.
fn rate_cell(rate: &str, name: &str, param: &str, link: bool) -> String {
    if link {
        format!(
            "<td><a href=\"/debug/pprof/heap.svg?sample=alloc_space&amp;{param}={}\">{rate}</a></td>",
            encode_query_value(name)
        )
    } else {
        format!("<td>{rate}</td>")
    }
}

/// The "Memory by scope" and "Allocation by thread group" sections.
pub(crate) fn usage_section(state: &State) -> String {
    let scopes = crate::scope::stats();
    let groups = crate::threads::stats();
    let now = Instant::now();
    let link = state.policy.profiles_visible();
    let mut base = state.rates.0.lock().unwrap_or_else(|p| p.into_inner());
    let window = now.saturating_duration_since(base.at);
    let secs = window.as_secs_f64();
    let since = format!("the last {secs:.1} s");

    // scopes: in use (estimated) first, then allocated
    let mut rows: Vec<&crate::scope::ScopeStats> = scopes
        .iter()
        .filter(|s| s.allocations > 0 || s.inuse_bytes > 0)
        .collect();
    rows.sort_by(|a, b| {
        b.inuse_bytes
            .cmp(&a.inuse_bytes)
            .then(b.allocated_bytes.cmp(&a.allocated_bytes))
            .then(a.name.cmp(b.name))
    });
    let inuse_total: u64 = rows.iter().map(|s| s.inuse_bytes).sum();
    let scope_rows: String = rows
        .iter()
        .map(|s| {
            let before = base
                .scopes
                .iter()
                .find(|(n, ..)| n == s.name)
                .map_or(0, |b| b.2);
            let share = if inuse_total > 0 {
                format!("{:.1}%", s.inuse_bytes as f64 * 100.0 / inuse_total as f64)
            } else {
                "\u{2013}".to_string()
            };
            format!(
                "<tr>{}{}<td>{}</td><td>{}</td><td>{share}</td></tr>",
                name_cell(s.name, "scope", "scope", link),
                rate_cell(
                    &format!("{}/s", bytes(per_sec(s.allocated_bytes, before, secs))),
                    s.name,
                    "scope",
                    link
                ),
                bytes(s.allocated_bytes as f64),
                bytes(s.inuse_bytes as f64),
            )
        })
        .collect();
    let group_rows: String = groups
        .iter()
        .map(|g| {
            let (a, ab, d) = base
                .groups
                .iter()
                .find(|(n, ..)| *n == g.name)
                .map_or((0, 0, 0), |b| (b.1, b.2, b.3));
            format!(
                "<tr>{}{}<td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{}</td></tr>",
                name_cell(&g.name, "thread", "thread", link),
                rate_cell(
                    &format!("{}/s", bytes(per_sec(g.allocated_bytes, ab, secs))),
                    &g.name,
                    "thread",
                    link
                ),
                per_sec(g.allocations, a, secs),
                per_sec(g.deallocations, d, secs),
                bytes(g.allocated_bytes as f64),
                g.live_threads,
            )
        })
        .collect();
    if window >= RATE_MIN_WINDOW {
        *base = UsageSample::of(now, &scopes, &groups);
    }
    drop(base);
    let info = crate::scope::info();
    let folded = if info.folded_names > 0 || info.rejected_names > 0 {
        format!(
            " {} new names past <code>max_scopes</code> ({}) and {} names that are not valid \
             were counted under <code>other</code>.",
            info.folded_names, info.max_scopes, info.rejected_names
        )
    } else {
        String::new()
    };
    let links = if link {
        " Each name opens its flamegraph of in-use bytes, \
         <code>/debug/pprof/heap.svg?scope=NAME</code> or <code>?thread=NAME</code>; each \
         allocated/s, its flamegraph of allocated bytes (<code>sample=alloc_space</code>)."
    } else {
        ""
    };
    format!(
        "<h2>Memory by scope</h2>\n<p>Allocations are counted exactly in the scope they were \
         made in (<code>allocscope::scope</code>; <code>unscoped</code> outside any, \
         <code>allocscope</code> for this exporter's own work). Rates are over {since} \
         (since the exporter started or this page's earlier view); in use is estimated from the \
         heap samples.{links}{folded}</p>\n\
         <table id=\"scopes\"><thead><tr><th>scope</th><th>allocated/s</th>\
         <th>allocated in all</th><th>in use (est.)</th><th>share of in use</th></tr></thead>\
         <tbody>{scope_rows}</tbody></table>\n\
         <h2>Allocation by thread group</h2>\n<p>Threads grouped by name without trailing digits \
         (<code>allocscope::threads</code>): what each group's threads allocated and freed, \
         exited threads included, not what they own. Rates over {since}.</p>\n\
         <table id=\"threadgroups\"><thead><tr><th>thread group</th><th>allocated/s</th>\
         <th>allocations/s</th><th>frees/s</th><th>allocated in all</th><th>live threads</th>\
         </tr></thead><tbody>{group_rows}</tbody></table>"
    )
}

/// How many temporary stacks the landing page lists.
const TEMPORARY_ROWS: usize = 10;

/// The landing page's "Temporary allocations" section: the stacks whose
/// sampled blocks mostly die within `temporary_lifetime`
/// ([`crate::profile::HeapProfile::temporary_stacks`]), from a profile
/// captured as the exporter's renders are (queued, within
/// `render_timeout`). Empty when profiles are not visible.
pub(crate) async fn temporary_section(state: &State) -> String {
    if !state.policy.profiles_visible() {
        return String::new();
    }
    let threshold = crate::profile::temporary_lifetime();
    let listed = super::pprof::render(
        state.render_timeout,
        "the temporary allocations",
        move || {
            // on a blocking thread: the exporter's work there too
            crate::scope::ALLOCSCOPE.within(|| {
                Ok(crate::profile::HeapProfile::capture()
                    .temporary_stacks(threshold, TEMPORARY_ROWS))
            })
        },
    )
    .await;
    let head = format!(
        "<h2>Temporary allocations</h2>\n<p>Stacks whose sampled blocks mostly die within \
         {threshold:?} (<code>temporary_lifetime</code>): churn a reused buffer would remove. \
         <a href=\"/debug/pprof/heap.svg?sample=temporary\">flamegraph</a></p>\n"
    );
    let body = match listed {
        Err(r) => format!(
            "<p class=\"note\">Could not list them now: {}</p>",
            escape(String::from_utf8_lossy(&r.body).trim())
        ),
        Ok(list) if list.is_empty() => {
            "<p>None yet: no stack has most of its sampled blocks freed that soon.</p>".to_string()
        }
        Ok(list) => {
            let rows: String = list
                .iter()
                .map(|t| {
                    // the first frames (std's allocation machinery is
                    // trimmed from the capture already)
                    let stack: Vec<&str> = t.frames().iter().map(|f| f.name()).take(4).collect();
                    format!(
                        "<tr><td style=\"text-align:left\"><code>{}</code></td><td>{}</td>\
                         <td>{:.0}%</td><td>{}</td></tr>",
                        escape(&stack.join(" \u{2190} ")),
                        mib(t.short_lived_bytes()),
                        t.short_lived_share() * 100.0,
                        t.sampled_allocs()
                    )
                })
                .collect();
            format!(
                "<table id=\"temporary\"><thead><tr><th>stack (leaf first, from the caller of std's allocation code)</th>\
                 <th>short-lived bytes allocated (est.)</th><th>short-lived share</th>\
                 <th>samples</th></tr></thead><tbody>{rows}</tbody></table>"
            )
        }
    };
    head + &body
}

/// The page; `temporary` is [`temporary_section`]'s.
pub(crate) fn page(state: &State, temporary: &str) -> Reply {
    let usage = usage_section(state);
    let now = LogSample::take();
    let sampler = crate::sampling::stats();
    let program = std::env::args()
        .next()
        .map(|a| a.rsplit('/').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let uptime = state.started.elapsed().as_secs();
    let interval = if sampler.interval == 0 {
        "off".to_string()
    } else {
        size(sampler.interval)
    };
    let gc = crate::gc::stats();
    let recent = crate::gc::cycles();
    let threshold = gc
        .threshold
        .map_or_else(|| "off".to_string(), |t| format!("{t}%"));
    let goal = if gc.heap_goal == u64::MAX {
        "none".to_string()
    } else {
        mib(gc.heap_goal)
    };
    let limit = gc.memory_limit.map_or_else(|| "off".to_string(), mib);
    let last_cycle = recent
        .last()
        .map_or_else(|| "none yet".to_string(), |c| format!("last: {}", c.reason));
    let card = |id: &str, title: &str, value: String, sub: &str, sub_id: &str| {
        format!(
            "<div class=\"card\"><small>{title}</small><b id=\"{id}\">{}</b>\
             <small id=\"{sub_id}\">{sub}</small></div>",
            escape(&value)
        )
    };
    let cards = [
        card(
            "live",
            "heap live",
            mib(now.live_bytes),
            &format!("{} objects", now.live_objects),
            "objects",
        ),
        card(
            "rss",
            "resident memory",
            now.rss_bytes.map(mib).unwrap_or_else(|| "n/a".into()),
            "process_resident_memory_bytes",
            "rss_sub",
        ),
        card(
            "rate",
            "allocations/s",
            "…".into(),
            "since last refresh",
            "rate_sub",
        ),
        card(
            "threads",
            "threads",
            now.threads
                .map(|t| t.to_string())
                .unwrap_or_else(|| "n/a".into()),
            "process_threads",
            "threads_sub",
        ),
        card(
            "interval",
            "sample interval",
            interval,
            &format!("{} live samples", sampler.live_samples),
            "samples",
        ),
        card(
            "collections",
            "collections",
            now.collections.to_string(),
            &last_cycle,
            "collections_sub",
        ),
        card(
            "gc_threshold",
            "collection threshold",
            threshold,
            &format!("heap goal {goal}"),
            "gc_goal",
        ),
        card(
            "gc_limit",
            "memory limit",
            limit,
            "soft limit on live bytes",
            "gc_limit_sub",
        ),
    ]
    .concat();
    let links = [
        ("/metrics", "Prometheus metrics"),
        ("/debug/pprof/", "pprof index"),
        ("/debug/pprof/heap", "heap profile (pprof, in-use)"),
        ("/debug/pprof/heap?debug=1", "heap profile as text"),
        (
            "/debug/pprof/allocs",
            "allocs profile (pprof, all allocations)",
        ),
        ("/debug/pprof/allocs?debug=1", "allocs profile as text"),
        (
            "/debug/pprof/heap.svg?sample=inuse_space",
            "flamegraph: in-use bytes",
        ),
        (
            "/debug/pprof/heap.svg?sample=inuse_objects",
            "flamegraph: in-use objects",
        ),
        (
            "/debug/pprof/heap.svg?sample=alloc_space",
            "flamegraph: allocated bytes",
        ),
        (
            "/debug/pprof/heap.svg?sample=alloc_objects",
            "flamegraph: allocated objects",
        ),
        (
            "/debug/pprof/heap.svg?diff=baseline",
            "flamegraph: growth since the baseline",
        ),
        (
            "/debug/pprof/heap.svg?min_age=10m",
            "flamegraph: in use for 10 minutes or more",
        ),
        (
            "/debug/pprof/heap.svg?sample=temporary",
            "flamegraph: temporary allocations (short-lived bytes)",
        ),
        (
            "/debug/pprof/profile?seconds=10",
            "CPU profile, 10 s (pprof)",
        ),
        ("/debug/pprof/cmdline", "command line"),
        ("/gc", "collection cycles (JSON)"),
        ("/debug/leaks", "leak suspects (JSON)"),
    ]
    .iter()
    .map(|(href, what)| format!("<li><a href=\"{href}\">{what}</a> <code>{href}</code></li>"))
    .collect::<String>();
    let addr = state.addr.to_string();
    let flame = if state.policy.profiles_visible() {
        "<p><label>View <select id=\"sample\">\
         <option value=\"inuse_space\">in-use bytes</option>\
         <option value=\"inuse_objects\">in-use objects</option>\
         <option value=\"alloc_space\">allocated bytes</option>\
         <option value=\"alloc_objects\">allocated objects</option>\
         <option value=\"temporary\">temporary allocations</option></select></label> \
         <form method=\"post\" action=\"/debug/pprof/baseline\" style=\"display:inline\">\
         <button type=\"submit\">Save baseline</button></form> then \
         <a href=\"/debug/pprof/heap.svg?diff=baseline\">show growth</a></p>\
         <object id=\"fg\" type=\"image/svg+xml\" data=\"/debug/pprof/heap.svg?sample=inuse_space\">\
         heap flamegraph</object>"
            .to_string()
    } else {
        format!(
            "<p class=\"note\">Profiles are off: this exporter listens on {} without a token. \
             Set <code>token</code> (ALLOCSCOPE_TOKEN) or <code>allow_remote_control = true</code> \
             to enable them.</p>",
            escape(&addr)
        )
    };
    let rows: String = recent
        .iter()
        .rev()
        .take(10)
        .map(|c| {
            let goal = if c.goal_bytes == u64::MAX {
                "none".to_string()
            } else {
                mib(c.goal_bytes)
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td></td><td>{goal}</td><td>{} \u{2192} {}</td>\
                 <td>{}</td><td>{}</td><td>{:.2} ms</td></tr>",
                c.number,
                c.reason,
                mib(c.live_bytes_before),
                mib(c.live_bytes_after),
                mib(c.released_bytes),
                mib(c.reclaimed_bytes),
                c.duration.as_secs_f64() * 1000.0
            )
        })
        .collect();
    let controls = if state.policy.profiles_visible() {
        format!(
            "<form id=\"gcform\"><label>Threshold (percent, or off) \
             <input id=\"gcset\" name=\"set\" size=\"6\" value=\"{}\"></label> \
             <button type=\"submit\">Set threshold</button> \
             <button type=\"button\" id=\"gcnow\">Collect now</button>\
             <span id=\"gcresult\"></span></form>\
             <p>From a shell: <code>curl -X POST 'http://{addr}/gc?set=200'</code>, \
             <code>curl -X POST http://{addr}/gc/collect</code>.</p>",
            escape(
                &gc.threshold
                    .map_or_else(|| "off".to_string(), |t| t.to_string())
            ),
            addr = escape(&state.addr.to_string()),
        )
    } else {
        "<p class=\"note\">Collection controls are off on a non-loopback address without a \
         token (see above).</p>"
            .to_string()
    };
    let leaks = if state.policy.profiles_visible() {
        super::leaks::landing_section(&state.leaks)
    } else {
        "<p class=\"note\">Leak suspects name functions: off with profiles (see below).</p>"
            .to_string()
    };
    let collection = format!(
        "{controls}<table><thead><tr><th>#</th><th>reason</th><th>time</th><th>goal</th>\
         <th>live before \u{2192} after</th><th>released</th><th>reclaimed</th>\
         <th>duration</th></tr></thead><tbody id=\"cycles\">{rows}</tbody></table>"
    );
    Reply::html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>allocscope · {prog}</title><style>{STYLE}</style></head><body>\n\
         <header><h1>allocscope · {prog}</h1><span>pid {pid} · exporter on {addr} · up {uptime} s · \
         <span id=\"status\">live numbers refresh every 2 s</span></span></header>\n<main>\n\
         <section class=\"cards\">{cards}</section>\n\
         <h2>Live heap, last 2 minutes</h2>\n\
         <svg id=\"spark\" width=\"300\" height=\"60\" viewBox=\"0 0 300 60\" role=\"img\" \
         aria-label=\"live heap over time\"><polyline id=\"line\" fill=\"none\" stroke=\"#1a5fb4\" \
         stroke-width=\"2\" points=\"\"/><text id=\"sparkmax\" x=\"4\" y=\"12\" font-size=\"10\" \
         fill=\"#666\"></text></svg>\n\
         {usage}\n\
         <h2>Leak suspects</h2>\n{leaks}\n\
         <h2>Collection cycles</h2>\n{collection}\n\
         <h2>Views</h2>\n<ul>{links}</ul>\n\
         <p>From a shell: <code>go tool pprof http://{addr}/debug/pprof/heap</code>, \
         <code>go tool pprof -seconds 10 http://{addr}/debug/pprof/profile</code>.</p>\n\
         {temporary}\n<h2>Heap flamegraph</h2>\n{flame}\n</main>\n<script>{SCRIPT}</script>\n</body></html>\n",
        prog = escape(&program),
        pid = std::process::id(),
        addr = escape(&addr),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size(512 * 1024), "512 KiB");
        assert_eq!(super::size(1), "1 B");
        assert_eq!(super::size(1536), "1536 B");
        assert_eq!(super::size(4 << 30), "4 GiB");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            super::escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
