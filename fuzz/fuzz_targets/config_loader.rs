//! Fuzzes the config loader: any bytes give a config that keeps the model's promises, or an
//! error of exactly one line per problem, each naming the file and a position inside it; never
//! a panic. The checks are in `../common/config_checks.rs`, shared with `tests/properties.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../common/config_checks.rs"]
mod config_checks;

fuzz_target!(|data: &[u8]| config_checks::parse_and_check("fuzz.yaml", data));
