//! Fuzzes the decoder with one persistent `Decoder`; see `flowlens_fuzz::Target::NetflowV5`
//! for how an input becomes a datagram.
#![no_main]

use flowlens_fuzz::{Target, fuzz_one};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_one(Target::NetflowV5, data));
