//! Any bytes as a CDA document: `parse_cda` answers, and whatever it reads renders
//! to HTML without a script element.
#![no_main]

use directmail_content::cda::{CdaLimits, RenderOptions, parse_cda, render_document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_cda(data, &CdaLimits::default()) {
        Ok(document) => {
            let html = render_document(&document, &RenderOptions::new("/leave?to="));
            // text is escaped, so "<script" can only be an element
            let lower = html.to_ascii_lowercase();
            assert!(!lower.contains("<script"), "a script element was rendered");
        }
        Err(refusal) => {
            let _ = refusal.to_string();
        }
    }
});
