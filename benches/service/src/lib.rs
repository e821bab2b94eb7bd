//! A small axum JSON service for comparing global allocators on a real
//! request path, and the pieces that drive and check it.
//!
//! The service ([`app`], served by [`run`]) has two routes that allocate the
//! way web services do:
//!
//! - `POST /order`: a ~1.8 KB JSON order parsed into structs by axum's `Json`
//!   extractor; [`summarize_order`] computes a summary (strings, a map, a
//!   receipt), which goes into a bounded cache under the service's own order
//!   number (so the cache fills, and is trimmed by a quarter when full); the
//!   answer is a short JSON acknowledgement;
//! - `GET /search?q=…&limit=…`: [`run_search`] scans a catalog and builds
//!   strings, a facet map and a result list, answered as JSON.
//!
//! The two named functions are the "handlers" whose share of the allocated
//! bytes a heap profile should show: [`summarize_order`] about 20% and
//! [`run_search`] about 50% of everything the process allocates under the
//! load of [`load`] (the rest is axum, hyper and tokio, the `Json`
//! extractor's parsing and the responses' serialisation). The `svc_exact`
//! binary measures the exact figures with `allocscope::measure` through
//! [`set_meter`].
//!
//! Each `svc_*` binary declares one global allocator and calls [`run`]; the
//! library itself names no allocator crate. `benches/service.sh` builds and
//! drives them; see docs/measurements.md, "A real service, side by side".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub mod load;

/// An order as the client sends it (`POST /order`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// The client's order id.
    pub id: String,
    /// Who ordered.
    pub customer: Customer,
    /// Where it goes.
    pub shipping: Address,
    /// Who pays.
    pub billing: Address,
    /// What was ordered.
    pub items: Vec<Item>,
    /// A coupon code, if any.
    pub coupon: Option<String>,
    /// Free text from the customer.
    pub notes: String,
    /// When the client created the order (RFC 3339).
    pub created_at: String,
    /// The sales channel ("web", "app", …).
    pub channel: String,
}

/// The ordering customer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    /// Customer id.
    pub id: String,
    /// Full name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Phone number.
    pub phone: String,
    /// Loyalty tier ("gold", "silver", …).
    pub tier: String,
    /// Marketing tags.
    pub tags: Vec<String>,
}

/// A postal address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Address {
    /// Addressee.
    pub name: String,
    /// Street and number.
    pub line1: String,
    /// Second line, if any.
    pub line2: Option<String>,
    /// City.
    pub city: String,
    /// Region or state.
    pub region: String,
    /// Postal code.
    pub postal_code: String,
    /// ISO country code.
    pub country: String,
}

/// One line of an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// Stock-keeping unit.
    pub sku: String,
    /// Product name.
    pub name: String,
    /// Catalog category.
    pub category: String,
    /// How many.
    pub quantity: u32,
    /// Price of one, in cents.
    pub unit_price_cents: u64,
    /// Currency code.
    pub currency: String,
    /// Free-form attributes (colour, size, …).
    pub attributes: BTreeMap<String, String>,
}

/// What `POST /order` answers, and what the cache keeps.
#[derive(Debug, Clone, Serialize)]
pub struct OrderSummary {
    /// The order's id.
    pub order_id: String,
    /// "Name <email>".
    pub customer: String,
    /// One formatted line per item.
    pub lines: Vec<String>,
    /// Cents per category.
    pub by_category: BTreeMap<String, u64>,
    /// Sum of the lines, in cents.
    pub subtotal_cents: u64,
    /// Coupon and tier discount, in cents.
    pub discount_cents: u64,
    /// Tax, in cents.
    pub tax_cents: u64,
    /// What the customer pays, in cents.
    pub total_cents: u64,
    /// The shipping label, several lines.
    pub shipping_label: String,
    /// The printable receipt.
    pub receipt: String,
    /// The receipt as an HTML table.
    pub receipt_html: String,
    /// The order as received, re-serialised for the audit log.
    pub audit: String,
    /// Checks that fired ("billing differs from shipping", …).
    pub flags: Vec<String>,
}

/// The query of `GET /search`.
#[derive(Debug, Deserialize)]
pub struct SearchParams {
    /// Words to look for.
    pub q: String,
    /// Most hits to return (default 24).
    pub limit: Option<usize>,
}

/// One search hit.
#[derive(Debug, Serialize)]
pub struct Hit {
    /// Stock-keeping unit.
    pub sku: String,
    /// Product name, matched words in brackets.
    pub title: String,
    /// A line of description around the match.
    pub snippet: String,
    /// Relevance.
    pub score: u32,
}

/// What `GET /search` answers.
#[derive(Debug, Serialize)]
pub struct SearchResult {
    /// The query as understood (lower-cased words).
    pub terms: Vec<String>,
    /// Number of matching products.
    pub matched: usize,
    /// The best hits.
    pub hits: Vec<Hit>,
    /// Number of matching products per category.
    pub facets: BTreeMap<String, usize>,
    /// A hash of the rendered result list (all matches), for caching.
    pub etag: String,
}

/// What `POST /order` answers (the full [`OrderSummary`] stays in the
/// cache).
#[derive(Debug, Serialize)]
pub struct OrderAck {
    /// The order's id.
    pub order_id: String,
    /// The service's number for it (the cache's key, with the id).
    pub number: u64,
    /// What the customer pays, in cents.
    pub total_cents: u64,
    /// Number of lines.
    pub lines: usize,
    /// Checks that fired.
    pub flags: Vec<String>,
}

/// A catalog product (built once at start-up).
#[derive(Debug)]
pub struct Product {
    /// Stock-keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Category.
    pub category: String,
    /// Description text.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// The products and an inverted index of their words.
#[derive(Debug)]
pub struct Catalog {
    /// The products.
    pub products: Vec<Product>,
    /// Lower-cased word → (product index, occurrences) for every product
    /// whose name, category, description or tags contain it.
    pub index: HashMap<String, Vec<(u32, u32)>>,
}

/// The words the catalog's names and the load's queries are made of.
pub const WORDS: [&str; 24] = [
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "indigo",
    "juniper", "kelp", "lumen", "maple", "nectar", "onyx", "pepper", "quartz", "river", "sable",
    "tundra", "umber", "velvet", "willow", "zephyr",
];
/// The products' kinds.
pub const NOUNS: [&str; 12] = [
    "kettle", "lamp", "chair", "jacket", "backpack", "mug", "blanket", "speaker", "notebook",
    "candle", "boots", "tent",
];
/// The catalog's categories.
pub const CATEGORIES: [&str; 8] = [
    "kitchen", "home", "outdoor", "apparel", "audio", "office", "garden", "travel",
];

/// The catalog the search looks in: 480 products and their word index.
pub fn catalog() -> Catalog {
    let mut v = Vec::new();
    let mut index: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
    for i in 0..480usize {
        let a = WORDS[i % WORDS.len()];
        let b = WORDS[(i * 7 + 3) % WORDS.len()];
        let noun = NOUNS[(i / 3) % NOUNS.len()];
        let category = CATEGORIES[(i * 5) % CATEGORIES.len()].to_string();
        let name = format!("{a} {b} {noun}");
        let description = format!(
            "A {noun} in {a} finish with {b} accents, made for {category} use. \
             Ships in recycled packaging; model {i:04}."
        );
        let tags = vec![
            a.to_string(),
            category.clone(),
            format!("series-{}", i % 17),
        ];
        let text = format!("{name} {category} {description} {}", tags.join(" ")).to_lowercase();
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for w in text.split(|c: char| !c.is_alphanumeric() && c != '-') {
            if !w.is_empty() {
                *counts.entry(w).or_default() += 1;
            }
        }
        for (w, n) in counts {
            index.entry(w.to_string()).or_default().push((i as u32, n));
        }
        v.push(Product {
            sku: format!("SKU-{i:05}"),
            name,
            category,
            description,
            tags,
        });
    }
    Catalog { products: v, index }
}

/// The order summary: formatted lines, a map per category, totals, the
/// shipping label and a printable receipt. One of the two functions whose
/// share of the allocated bytes the heap profiles are checked on.
#[inline(never)]
pub fn summarize_order(order: &Order) -> OrderSummary {
    let mut lines = Vec::new();
    let mut by_category: BTreeMap<String, u64> = BTreeMap::new();
    let mut subtotal = 0u64;
    for item in &order.items {
        let cents = item.unit_price_cents * u64::from(item.quantity);
        subtotal += cents;
        *by_category.entry(item.category.clone()).or_default() += cents;
        let attrs: Vec<String> = item
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.push(format!(
            "{} x {} ({}) [{}] @ {}.{:02} {}",
            item.quantity,
            item.name,
            item.sku,
            attrs.join(", "),
            item.unit_price_cents / 100,
            item.unit_price_cents % 100,
            item.currency
        ));
    }
    let tier_pct = match order.customer.tier.as_str() {
        "gold" => 10,
        "silver" => 5,
        _ => 0,
    };
    let coupon_pct = if order.coupon.is_some() { 5 } else { 0 };
    let discount = subtotal * (tier_pct + coupon_pct) / 100;
    let tax = (subtotal - discount) * 8 / 100;
    let total = subtotal - discount + tax;
    let mut flags = Vec::new();
    if order.shipping.postal_code != order.billing.postal_code {
        flags.push(format!(
            "billing {} differs from shipping {}",
            order.billing.postal_code, order.shipping.postal_code
        ));
    }
    if total > 50_000 {
        flags.push(format!("large order: {}.{:02}", total / 100, total % 100));
    }
    for tag in &order.customer.tags {
        if tag.starts_with("vip") {
            flags.push(format!("customer tag {tag}"));
        }
    }
    let s = &order.shipping;
    let shipping_label = format!(
        "{}\n{}\n{}{} {} {}\n{}",
        s.name,
        s.line1,
        s.line2
            .as_deref()
            .map(|l| format!("{l}\n"))
            .unwrap_or_default(),
        s.postal_code,
        s.city,
        s.region,
        s.country
    );
    // the receipt grows line by line, as such text does
    let mut receipt = String::new();
    receipt.push_str(&format!(
        "Order {} via {} at {}\n",
        order.id, order.channel, order.created_at
    ));
    receipt.push_str(&format!(
        "Customer: {} <{}> {}\n",
        order.customer.name, order.customer.email, order.customer.phone
    ));
    for (n, line) in lines.iter().enumerate() {
        receipt.push_str(&format!("{:>3}. {line}\n", n + 1));
    }
    for (category, cents) in &by_category {
        receipt.push_str(&format!(
            "     {category:<12} {:>8}.{:02}\n",
            cents / 100,
            cents % 100
        ));
    }
    receipt.push_str(&format!(
        "Subtotal {}.{:02}  Discount {}.{:02}  Tax {}.{:02}  Total {}.{:02}\n",
        subtotal / 100,
        subtotal % 100,
        discount / 100,
        discount % 100,
        tax / 100,
        tax % 100,
        total / 100,
        total % 100
    ));
    receipt.push_str(&shipping_label.replace('\n', " / "));
    receipt.push('\n');
    if !order.notes.is_empty() {
        receipt.push_str(&format!("Notes: {}\n", order.notes));
    }
    // and as HTML, row by row
    let mut receipt_html = String::from("<table class=\"receipt\">\n");
    for (item, line) in order.items.iter().zip(&lines) {
        receipt_html.push_str(&format!(
            "<tr><td class=\"sku\">{}</td><td class=\"name\">{}</td><td class=\"qty\">{}</td>\
             <td class=\"line\">{}</td><td class=\"category\">{}</td></tr>\n",
            item.sku, item.name, item.quantity, line, item.category
        ));
    }
    receipt_html.push_str(&format!(
        "<tr class=\"total\"><td colspan=\"4\">{}</td><td>{}.{:02}</td></tr>\n</table>\n",
        order.customer.name,
        total / 100,
        total % 100
    ));
    let audit = serde_json::to_string_pretty(order).unwrap_or_default();
    OrderSummary {
        audit,
        receipt_html,
        order_id: order.id.clone(),
        customer: format!("{} <{}>", order.customer.name, order.customer.email),
        lines,
        by_category,
        subtotal_cents: subtotal,
        discount_cents: discount,
        tax_cents: tax,
        total_cents: total,
        shipping_label,
        receipt,
        flags,
    }
}

/// The search: lower-cased query words, every product scored against
/// them, a hit (bracketed title, snippet) and a rendered list entry for
/// match of the first page ([`PAGE`]), matching names per category; answers the best `limit` hits,
/// the facet counts and a hash of the rendered list. The other function
/// whose share of the allocated bytes the heap profiles are checked on.
#[inline(never)]
pub fn run_search(catalog: &Catalog, q: &str, limit: usize) -> SearchResult {
    let terms: Vec<String> = q.split_whitespace().map(str::to_lowercase).collect();
    let mut scores = vec![0u32; catalog.products.len()];
    for t in &terms {
        for &(i, n) in catalog.index.get(t).map_or(&[][..], Vec::as_slice) {
            scores[i as usize] += n;
        }
    }
    let mut scored: Vec<(u32, &Product)> = scores
        .iter()
        .zip(&catalog.products)
        .filter(|(s, _)| **s > 0)
        .map(|(s, p)| (*s, p))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.sku.cmp(&b.1.sku)));
    let mut by_category: HashMap<String, Vec<String>> = HashMap::new();
    let mut hits = Vec::new();
    let mut entries = Vec::new();
    for (_, p) in &scored {
        by_category
            .entry(p.category.clone())
            .or_default()
            .push(p.name.clone());
    }
    // the first page of the list: a hit and a rendered entry each
    for &(score, p) in scored.iter().take(PAGE) {
        let mut title = String::with_capacity(p.name.len() + 8);
        for word in p.name.split(' ') {
            if !title.is_empty() {
                title.push(' ');
            }
            if terms.iter().any(|t| t == word) {
                title.push('[');
                title.push_str(word);
                title.push(']');
            } else {
                title.push_str(word);
            }
        }
        let at = terms
            .iter()
            .filter_map(|t| p.description.find(t.as_str()))
            .min()
            .unwrap_or(0)
            .min(p.description.len());
        let start = p.description[..at].rfind(' ').map_or(0, |i| i + 1);
        let end = (start + 60).min(p.description.len());
        let snippet = format!("…{}…", &p.description[start..end]);
        entries.push(format!(
            "<li data-sku=\"{}\" data-score=\"{score}\"><b>{title}</b> in {}: {} <i>{}</i></li>",
            p.sku,
            p.category,
            p.description,
            p.tags.join(", ")
        ));
        hits.push(Hit {
            sku: p.sku.clone(),
            title,
            snippet,
            score,
        });
    }
    let page = entries.concat();
    let etag = format!("{:016x}", fnv1a(page.as_bytes()));
    hits.truncate(limit);
    SearchResult {
        terms,
        matched: scored.len(),
        hits,
        facets: by_category
            .iter()
            .map(|(c, names)| (c.clone(), names.len()))
            .collect(),
        etag,
    }
}

/// Matches rendered per search (the list's first page).
pub const PAGE: usize = 36;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Which of the two measured functions a [`Meter`] is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// [`summarize_order`].
    Order,
    /// [`run_search`].
    Search,
}

/// Runs a measured function (the closure) and may count what it does: see
/// [`set_meter`].
pub type Meter = fn(Handler, &mut dyn FnMut());

static METER: OnceLock<Meter> = OnceLock::new();

/// Installs `m` around every call of [`summarize_order`] and [`run_search`]
/// by the service (once; later calls are ignored). `svc_exact` counts their
/// allocations exactly with `allocscope::measure`; without a meter the
/// service pays one atomic load per request for this.
pub fn set_meter(m: Meter) {
    let _ = METER.set(m);
}

fn metered<R>(h: Handler, f: impl FnOnce() -> R) -> R {
    match METER.get() {
        None => f(),
        Some(m) => {
            let mut f = Some(f);
            let mut r = None;
            m(h, &mut || r = f.take().map(|f| f()));
            r.expect("the meter runs the function")
        }
    }
}

/// Order summaries by the service's order number, bounded: past its
/// maximum ([`CACHE_MAX`], or `SVC_CACHE_MAX`) entries the oldest quarter
/// is dropped.
#[derive(Debug, Default)]
pub struct Cache {
    map: HashMap<String, Arc<OrderSummary>>,
    fifo: VecDeque<String>,
    max: usize,
}

/// Most summaries the cache holds, unless `SVC_CACHE_MAX` says otherwise
/// (benches/service.sh sets 64 under callgrind, so that the cache is full,
/// and its teardown the same, after 500 requests as after 1,000).
pub const CACHE_MAX: usize = 2048;

impl Cache {
    fn insert(&mut self, id: String, summary: Arc<OrderSummary>) {
        if self.map.insert(id.clone(), summary).is_none() {
            self.fifo.push_back(id);
        }
        if self.map.len() > self.max {
            self.trim(self.max * 3 / 4);
        }
    }

    #[inline(never)]
    fn trim(&mut self, keep: usize) {
        while self.map.len() > keep {
            match self.fifo.pop_front() {
                Some(id) => {
                    self.map.remove(&id);
                }
                None => break,
            }
        }
        self.map.shrink_to_fit();
        self.fifo.shrink_to_fit();
    }
}

/// The service's shared state.
#[derive(Debug)]
pub struct AppState {
    catalog: Catalog,
    cache: Mutex<Cache>,
    next_order: AtomicU64,
}

async fn index() -> &'static str {
    "orders service\n"
}

async fn order(State(app): State<Arc<AppState>>, Json(order): Json<Order>) -> Json<OrderAck> {
    let summary = Arc::new(metered(Handler::Order, || summarize_order(&order)));
    let number = app.next_order.fetch_add(1, Ordering::Relaxed);
    let ack = OrderAck {
        order_id: summary.order_id.clone(),
        number,
        total_cents: summary.total_cents,
        lines: summary.lines.len(),
        flags: summary.flags.clone(),
    };
    app.cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(format!("{}#{number}", ack.order_id), summary);
    Json(ack)
}

async fn search(
    State(app): State<Arc<AppState>>,
    Query(p): Query<SearchParams>,
) -> Json<SearchResult> {
    let limit = p.limit.unwrap_or(24).min(200);
    Json(metered(Handler::Search, || {
        run_search(&app.catalog, &p.q, limit)
    }))
}

/// The service's routes: `GET /`, `POST /order`, `GET /search`.
pub fn app() -> Router {
    let state = Arc::new(AppState {
        catalog: catalog(),
        cache: Mutex::new(Cache {
            max: std::env::var("SVC_CACHE_MAX")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(CACHE_MAX),
            ..Cache::default()
        }),
        next_order: AtomicU64::new(1),
    });
    Router::new()
        .route("/", get(index))
        .route("/order", post(order))
        .route("/search", get(search))
        .with_state(state)
}

/// Serves [`app`] merged with `extra` (a binary's own routes, such as a
/// profile endpoint) on a multi-threaded tokio runtime, as `#[tokio::main]`
/// builds it (`TOKIO_WORKER_THREADS` sets the worker count), until SIGTERM
/// or SIGINT, then returns. The address is `SVC_ADDR`, by default
/// `127.0.0.1:0` (any free port); the bound one is printed as
/// `service=http://ADDR`.
pub fn run(extra: Router) -> std::io::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(extra))
}

async fn serve(extra: Router) -> std::io::Result<()> {
    let addr: SocketAddr = std::env::var("SVC_ADDR")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("service=http://{}", listener.local_addr()?);
    let router = app().merge(extra);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
}
