//! Frame starts, chunks and aborts through `FrameAssembler`, checked against a model:
//! only whole frames whose checksum matches ever come out.
#![no_main]
libfuzzer_sys::fuzz_target!(|ops: Vec<texstream_fuzz::AsmOp>| texstream_fuzz::assemble(ops));
