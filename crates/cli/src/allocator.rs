//! The process's memory allocator: jemalloc (tikv-jemallocator), for every allocation of the
//! process — Rust's through `#[global_allocator]`, librdkafka's, OpenSSL's and the other C
//! libraries' through the unprefixed `malloc` symbols the binary exports.
//!
//! Why: with glibc's malloc the operator's resident memory at 10,000 idle ScaledJobs was about
//! 20 MB more than its heap in use: glibc keeps memory freed after the start's burst in its
//! per-thread arenas and gives little of it back. jemalloc returns freed pages to the system
//! after a decay time. Measured with `cargo bench -p jobtide-cli --bench operator_scale`
//! (docs/operator.md, "The allocator").
//!
//! The options below are compiled in; `MALLOC_CONF` in the environment overrides them
//! (jemalloc reads it after these).

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options (its `malloc_conf` symbol):
/// - `narenas:2` — two arenas however many CPUs the node has: jemalloc's default is four per
///   CPU the process sees, which on a large node spreads a small heap over hundreds of arenas,
///   each keeping its own free pages; the operator's hot paths are not allocation-bound.
/// - `background_thread:true` — a jemalloc thread returns decayed pages while the operator is
///   idle between polls, rather than only when it next allocates.
#[allow(unsafe_code, non_upper_case_globals)]
// SAFETY: jemalloc reads `malloc_conf` as a `const char *` to a NUL-terminated string; a
// reference to a byte array is that pointer, and the bytes end in NUL.
#[unsafe(export_name = "malloc_conf")]
static malloc_conf: &[u8; 33] = b"narenas:2,background_thread:true\0";

#[cfg(test)]
mod tests {
    #[test]
    fn the_options_are_one_nul_terminated_string() {
        let options = super::malloc_conf;
        assert_eq!(options.last(), Some(&0));
        assert!(!options[..options.len() - 1].contains(&0));
    }
}
