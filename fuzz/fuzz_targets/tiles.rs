//! Coded frames (tiles, deltas, LZ4 blocks) through `TileDecoder`, on small grids: never
//! a panic, never more than a tile allocated, and what decodes re-codes to the same frame.
#![no_main]
libfuzzer_sys::fuzz_target!(|input: texstream_fuzz::TilesInput| texstream_fuzz::tiles(input));
