//! Scenario: `AllocScope` as the global allocator with `max_scopes` = 4:
//! names past the bound, and bad names, count under `other`, are reported
//! in `scope::info()`, and nothing panics.
use allocscope::scope::{self, Scope};
use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

static LATE: Scope = Scope::new("late-static");

fn allocs_of(name: &str) -> u64 {
    scope::stats()
        .iter()
        .find(|s| s.name == name)
        .map_or(0, |s| s.allocations)
}

#[test]
fn names_past_max_scopes_fold_into_other() {
    assert_eq!(scope::max_scopes(), scope::DEFAULT_MAX_SCOPES);
    assert_eq!(scope::set_max_scopes(4).unwrap(), 64);
    assert!(scope::set_max_scopes(0).is_err());
    assert!(scope::set_max_scopes(100_000).is_err());
    assert_eq!(scope::max_scopes(), 4);

    let tenants: Vec<&'static Scope> = (0..10)
        .map(|i| Scope::named(format!("tenant-{i}")))
        .collect();
    for (i, t) in tenants.iter().enumerate() {
        let want = if i < 4 {
            format!("tenant-{i}")
        } else {
            "other".into()
        };
        assert_eq!(t.name(), want);
    }
    // the same folded name again is not counted twice
    let _ = Scope::named("tenant-9");
    let info = scope::info();
    assert_eq!(info.scopes, 4);
    assert_eq!(info.folded_names, 6);

    // a static past the bound counts under other too
    let other_before = allocs_of("other");
    LATE.within(|| {
        for _ in 0..100 {
            std::hint::black_box(vec![0u8; 64]);
        }
        assert_eq!(scope::current(), "other");
    });
    tenants[7].within(|| {
        for _ in 0..50 {
            std::hint::black_box(vec![0u8; 64]);
        }
    });
    let other_after = allocs_of("other");
    assert!(
        other_after >= other_before + 150,
        "other: {other_before} -> {other_after}"
    );
    assert_eq!(scope::info().folded_names, 7, "late-static was folded");

    // bad names: other, counted, no panic
    let bad = [
        String::new(),
        "x".repeat(65),
        "new\nline".into(),
        "nul\0byte".into(),
        "c1\u{85}".into(),
    ];
    for b in &bad {
        assert_eq!(Scope::named(b).name(), "other", "{b:?}");
    }
    assert_eq!(scope::info().rejected_names, bad.len() as u64);
    // a 64-byte name is fine (within the bound once raised)
    scope::set_max_scopes(5).unwrap();
    assert_eq!(Scope::named("y".repeat(64)).name(), "y".repeat(64));
}
