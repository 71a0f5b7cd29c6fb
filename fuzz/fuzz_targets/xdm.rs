//! Any bytes as an XDM package: `is_xdm` and `read_xdm` must answer (a package, or a
//! refusal that displays as a sentence) without panicking, overflowing the stack or
//! allocating past the limits.
#![no_main]

use directmail_content::xdm::{XdmLimits, is_xdm, read_xdm};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = is_xdm(data);
    match read_xdm(data, &XdmLimits::default()) {
        Ok(package) => {
            for problem in &package.problems {
                let _ = problem.to_string();
            }
        }
        Err(refusal) => {
            let _ = refusal.to_string();
        }
    }
});
