//! One message body as the network reader decodes it: the first byte picks the kind.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| texstream_fuzz::decode_one_body(data));
