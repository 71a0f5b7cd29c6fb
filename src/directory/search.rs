//! Search text: everything searchable is stored, and every query is turned into,
//! lowercase ASCII tokens ("Dr. José  Müller-Smith" → `dr jose muller smith`), so
//! case, accents and word order do not matter on either database.

use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;

/// Longest free text a search or a suggestion takes, in characters; the rest is cut
/// off. A query is a few words; the cut keeps every query small for the database
/// (an FTS5 or tsquery expression and LIKE patterns per word) whatever is sent.
pub const QUERY_MAX_CHARS: usize = 200;

/// `text` cut to [`QUERY_MAX_CHARS`] characters, for every search box and
/// autocomplete (the directory's search page and suggestions, the compose page's).
pub fn cut_query(text: &str) -> &str {
    match text.char_indices().nth(QUERY_MAX_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Lowercase ASCII tokens of `text`: accents dropped (NFD, combining marks removed),
/// a few letters without a decomposition spelled out, anything else a separator.
pub fn tokens(text: &str) -> Vec<String> {
    let mut folded = String::with_capacity(text.len());
    for c in text.nfd() {
        if is_combining_mark(c) {
            continue;
        }
        match c {
            'ß' => folded.push_str("ss"),
            'æ' | 'Æ' => folded.push_str("ae"),
            'œ' | 'Œ' => folded.push_str("oe"),
            'ø' | 'Ø' => folded.push('o'),
            'ł' | 'Ł' => folded.push('l'),
            'đ' | 'Đ' | 'ð' | 'Ð' => folded.push('d'),
            'þ' | 'Þ' => folded.push_str("th"),
            'ı' => folded.push('i'),
            c if c.is_ascii_alphanumeric() => folded.push(c.to_ascii_lowercase()),
            _ => folded.push(' '),
        }
    }
    folded.split_whitespace().map(str::to_owned).collect()
}

/// The tokens of `text` joined by spaces (what the search columns hold).
pub fn folded(text: &str) -> String {
    tokens(text).join(" ")
}

/// The tokens sorted: two names with the same words in any order share this key.
pub fn name_key(text: &str) -> String {
    let mut t = tokens(text);
    t.sort();
    t.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_accents_and_punctuation_fold_away() {
        assert_eq!(folded("Dr. José  Müller-Smith"), "dr jose muller smith");
        assert_eq!(folded("Łukasz Ørsted Straße"), "lukasz orsted strasse");
        assert_eq!(
            folded("dr.lee@Direct.Example.org"),
            "dr lee direct example org"
        );
        assert_eq!(name_key("Smith, Anna"), name_key("anna SMITH"));
    }
}
