//! libFuzzer target: `judge()` on arbitrary bytes (see the library docs for
//! the mode byte). Run with `cargo fuzz run judge --features libfuzzer`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    directmail_smime_fuzz::run(data);
});
