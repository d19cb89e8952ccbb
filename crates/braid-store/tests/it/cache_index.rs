//! The gate cache's index: incremental size, LRU eviction, TTL, rebuild
//! after corruption.

use braid_store::cache_index::{CacheIndex, entry_path};

fn put(idx: &mut CacheIndex, key: &str, size: usize, max: u64) -> Vec<String> {
    let path = entry_path(idx.dir(), "ns", key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![b'x'; size]).unwrap();
    idx.insert("ns", key, size as u64, max)
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect()
}

#[test]
fn size_is_tracked_and_least_recently_used_go_first() {
    let dir = tempfile::tempdir().unwrap();
    // The clock stands still: uses within one millisecond keep their order.
    let clock = braid_core::ManualClock::at(1_000_000);
    let mut idx = CacheIndex::open(dir.path())
        .unwrap()
        .with_clock(std::sync::Arc::new(clock.clone()));
    assert!(put(&mut idx, "aa01", 100, 1000).is_empty());
    assert!(put(&mut idx, "aa02", 100, 1000).is_empty());
    assert!(
        idx.touch("ns", "aa01").unwrap().is_some(),
        "aa01 is now the most recently used"
    );
    assert_eq!(idx.total_size().unwrap(), 200);
    let evicted = put(&mut idx, "aa03", 150, 300);
    assert_eq!(evicted, vec!["aa02"]);
    assert_eq!(idx.total_size().unwrap(), 250);
    assert!(
        !entry_path(dir.path(), "ns", "aa02").exists(),
        "the evicted entry's file is deleted"
    );
    let s = idx.stats().unwrap();
    assert_eq!((s.entries, s.size), (2, 250));
    // Re-inserting a key replaces its size rather than adding to it.
    put(&mut idx, "aa03", 50, 1000);
    assert_eq!(idx.total_size().unwrap(), 150);
    // TTL: an entry unused for longer goes, a fresher one stays.
    clock.advance(60_000);
    assert!(idx.touch("ns", "aa01").unwrap().is_some());
    clock.advance(1);
    let expired: Vec<String> = idx
        .prune(1 << 30, Some(30_000))
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(expired, vec!["aa03"]);
    assert_eq!(idx.total_size().unwrap(), 100);
}

#[test]
fn a_corrupted_index_is_rebuilt_from_the_entries() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut idx = CacheIndex::open(dir.path()).unwrap();
        put(&mut idx, "bb01", 10, 1000);
        put(&mut idx, "bb02", 20, 1000);
    }
    for f in ["index.db-wal", "index.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    std::fs::write(
        dir.path().join("index.db"),
        b"this is not a database at all, sorry",
    )
    .unwrap();
    let idx = CacheIndex::open(dir.path()).unwrap();
    assert!(idx.rebuilt);
    let s = idx.stats().unwrap();
    assert_eq!((s.entries, s.size), (2, 30));
    assert!(idx.touch("ns", "bb02").unwrap().is_some());
    let aside = std::fs::read_dir(dir.path()).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("index.db.corrupt-")
    });
    assert!(aside, "the broken index is kept aside, not deleted");
}
