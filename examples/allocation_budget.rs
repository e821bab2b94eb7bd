//! Allocation budgets: assert how many times a function may allocate, as
//! you would in a test. `allocscope::measure` counts what the calling
//! thread did inside a closure, exactly; other threads (the test harness's
//! included) do not disturb it, so no global lock is needed.
//!
//! `cargo run --release --example allocation_budget`. In your own crate the
//! same checks go in a test file with allocscope as that test binary's
//! global allocator:
//!
//! ```ignore
//! // tests/budgets.rs
//! #[global_allocator]
//! static ALLOC: allocscope::AllocScope = allocscope::AllocScope::system();
//!
//! #[test]
//! fn parsing_a_header_does_not_allocate() {
//!     let (_, d) = allocscope::measure(|| my_crate::parse_header("Host: example.com"));
//!     assert_eq!(d.allocations, 0);
//! }
//! ```
use allocscope::{AllocScope, ThreadStats};

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

/// Splits `Name: value` without copying: must not allocate.
fn parse_header(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    Some((name.trim(), value.trim()))
}

/// Joins fields into one line with its capacity reserved up front: one
/// allocation, whatever the number of fields.
fn render_row(fields: &[&str]) -> String {
    let len = fields.iter().map(|f| f.len() + 1).sum();
    let mut row = String::with_capacity(len);
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            row.push(',');
        }
        row.push_str(f);
    }
    row
}

/// The same without the reservation: the `String` grows as it goes
/// (reallocations), which is what a budget catches.
fn render_row_growing(fields: &[&str]) -> String {
    let mut row = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            row.push(',');
        }
        row.push_str(f);
    }
    row
}

/// Runs `f` and panics if it allocates (or reallocates) more than
/// `max_allocations` times; returns its value and what it did.
fn within_budget<R>(what: &str, max_allocations: u64, f: impl FnOnce() -> R) -> (R, ThreadStats) {
    let (value, d) = allocscope::measure(f);
    // `allocations` includes the allocation half of every reallocation.
    assert!(
        d.allocations <= max_allocations,
        "{what}: {} allocations ({} of them reallocations, {} bytes), budget {max_allocations}",
        d.allocations,
        d.reallocations,
        d.allocated_bytes
    );
    println!(
        "{what}: {} allocations, {} reallocations, {} bytes (budget {max_allocations})",
        d.allocations, d.reallocations, d.allocated_bytes
    );
    (value, d)
}

fn main() {
    let fields = ["2024-05-01", "GET", "/orders/42", "200", "1834"];

    let (header, _) = within_budget("parse_header", 0, || parse_header("Host: example.com"));
    assert_eq!(header, Some(("Host", "example.com")));

    let (row, d) = within_budget("render_row", 1, || render_row(&fields));
    assert_eq!(d.reallocations, 0);
    // `row` is still alive: measure counts what happened, not what is live.
    assert_eq!(row.len(), 34);

    // Over budget: the growing version reallocates as the row gets longer.
    let (_, d) = allocscope::measure(|| render_row_growing(&fields));
    println!(
        "render_row_growing: {} allocations, {} reallocations: over a budget of 1",
        d.allocations, d.reallocations
    );
    assert!(d.allocations > 1);

    // Freed blocks count too: a temporary dropped inside the closure is an
    // allocation and a deallocation. (`black_box` keeps the optimiser from
    // removing an allocation whose contents nobody reads.)
    let (_, d) = allocscope::measure(|| std::hint::black_box(fields.join(",")).len());
    assert_eq!((d.allocations, d.deallocations), (1, 1));
    println!("all budgets held");
}
