//! A byte stream decoded message by message under default and small limits; every
//! message must re-encode to its own bytes, and decoding must never allocate past them.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| texstream_fuzz::decode_stream(data));
