//! The accepting side's handshake (preamble, hello, token proof) against bytes from a
//! peer, without and with a token.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| texstream_fuzz::handshake(data));
