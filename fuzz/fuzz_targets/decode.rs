//! Feeds arbitrary bytes to every decoder of the wire protocol (requests, responses, frames).
//! Decoding must never panic; whatever decodes must re-encode to the same bytes and decode
//! to the same value (`ittc_wire::fuzz::decode_any` asserts it, and its panic is the bug
//! report).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ittc_wire::fuzz::decode_any(data);
});
