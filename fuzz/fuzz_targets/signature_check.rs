#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sheratan_hub::fuzzing::signature_check(data);
});
