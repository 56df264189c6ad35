//! Replays the fuzz target's seed corpus (`fuzz/corpus/decode/`) as an ordinary test, and
//! (ignored by default) writes that seed corpus.
//!
//! To rewrite the seeds after a protocol change:
//! `cargo test -p ittc-wire --test fuzz_corpus -- --ignored write_seed_corpus`

// clippy.toml allows unwrap in #[test] functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use ittc_wire::frame::HEADER_LEN;
use ittc_wire::fuzz::{decode_any, sample_requests, sample_responses};
use ittc_wire::{Message, encode, write_frame_blocking};

fn corpus_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/decode"
    ))
}

#[test]
fn seed_corpus_replays_without_failure() {
    let mut count = 0;
    for entry in fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            decode_any(&fs::read(&path).unwrap());
            count += 1;
        }
    }
    assert!(count >= 20, "only {count} corpus files");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
}

fn write_message<T: Message>(dir: &Path, name: &str, msg: &T) {
    let body = encode(msg).unwrap();
    write(dir, name, &body);
    write(dir, &format!("{name}-truncated"), &body[..body.len() / 2]);
    let mut frame = Vec::new();
    write_frame_blocking(&mut frame, msg).unwrap();
    write(dir, &format!("{name}.frame"), &frame);
}

#[test]
#[ignore = "writes the seed corpus; run by hand after a protocol change"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    fs::create_dir_all(&dir).unwrap();
    for req in sample_requests().unwrap() {
        write_message(&dir, &format!("request-{}", req.kind()), &req);
    }
    for resp in sample_responses().unwrap() {
        write_message(&dir, &format!("response-{}", resp.kind()), &resp);
    }

    // Two frames back to back.
    let mut frames = Vec::new();
    for req in sample_requests().unwrap().iter().take(2) {
        write_frame_blocking(&mut frames, req).unwrap();
    }
    write(&dir, "frames-hello-login", &frames);

    // Bad headers and lying lengths.
    write(&dir, "header-4gib", &[0xff; HEADER_LEN]);
    write(&dir, "header-empty-frame", &[0; HEADER_LEN]);
    write(&dir, "header-only", &[0, 0, 0, 16]);
    let mut lying = 6u32.to_le_bytes().to_vec(); // PutObject
    lying.extend_from_slice(&1u64.to_le_bytes());
    lying.extend_from_slice(&0u32.to_le_bytes());
    lying.extend_from_slice(&u64::MAX.to_le_bytes()); // attribute count
    write(&dir, "request-put_object-lying-count", &lying);
    let mut long_id = 12u32.to_le_bytes().to_vec(); // DeleteKey
    long_id.extend_from_slice(&65u64.to_le_bytes());
    long_id.extend_from_slice(&[7; 65]);
    write(&dir, "request-delete_key-oversize-id", &long_id);

    // Deterministic garbage.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for (i, len) in [1usize, 7, 64, 300].into_iter().enumerate() {
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        write(&dir, &format!("garbage-{i}"), &garbage);
    }
}
