//! The `ssegate` binary: the allocator, then [`ssegate::run`].

use std::process::ExitCode;

/// jemalloc, with its background threads on: they hand pages that streams no longer use back to
/// the system within seconds. With glibc's allocator the memory of closed streams stays with the
/// process: after 5 000 streams had closed, RSS stayed at 2.7 times its idle size; with this one
/// it was 1.08 times its idle size 60 s after (docs/benchmark.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    ssegate::run()
}
