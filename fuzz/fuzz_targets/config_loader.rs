//! Fuzzes the config loader: any bytes give a config that keeps the model's promises, or errors
//! that each name the file and a position inside it; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../common/config_checks.rs"]
mod config_checks;

fuzz_target!(|data: &[u8]| config_checks::parse_and_check("fuzz.yaml", data));
