//! sse-load: benchmark load tool for ssegate (being built).

fn main() {}
