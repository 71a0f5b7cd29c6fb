//! Office containers: ZIP (Office Open XML, ECMA-376 Part 2) and OLE2 compound files
//! ([MS-CFB]). Only the names of the parts are read; nothing is decompressed.

use std::collections::HashSet;
use std::io::Cursor;

use super::sniff::Format;

/// The OLE2 compound file signature ([MS-CFB] §2.2).
pub(super) const OLE2_MAGIC: &[u8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1";

/// A ZIP file: a Word document if it holds the word-processing parts, otherwise
/// described by what it seems to hold.
pub(super) fn zip_format(bytes: &[u8]) -> Format {
    let Ok(archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return Format::Other("a damaged ZIP archive");
    };
    // Part names in Office Open XML compare without regard to case (ECMA-376-2 §6.2.2.3).
    let names: HashSet<String> = archive
        .file_names()
        .map(|name| name.to_ascii_lowercase())
        .collect();
    let has_folder = |folder: &str| names.iter().any(|name| name.starts_with(folder));
    let office = names.contains("[content_types].xml");
    if office && has_folder("word/") {
        // A macro-enabled document (.docm) keeps its VBA project in this part.
        let macros = names.iter().any(|name| name.ends_with("vbaproject.bin"));
        return Format::Docx { macros };
    }
    if office && has_folder("xl/") {
        return Format::Other("an Excel spreadsheet");
    }
    if office && has_folder("ppt/") {
        return Format::Other("a PowerPoint presentation");
    }
    if names.contains("mimetype") && names.contains("content.xml") {
        return Format::Other("an OpenDocument file");
    }
    Format::Other("a ZIP archive")
}

/// An OLE2 compound file: a Word 97–2003 document, an encrypted Office Open XML
/// document, or something else that is described.
pub(super) fn ole2_format(bytes: &[u8]) -> Format {
    let names = ole2_entry_names(bytes);
    let has = |name: &str| names.contains(name);
    // [MS-OFFCRYPTO] §2.3.4.4: an encrypted .docx/.xlsx/.pptx is an OLE2 file with
    // these streams in place of its ZIP package.
    if has("EncryptedPackage") || has("EncryptionInfo") {
        return Format::Doc {
            macros: false,
            encrypted: true,
        };
    }
    let macros = has("Macros") || has("_VBA_PROJECT_CUR") || has("VBA");
    if has("WordDocument") {
        return Format::Doc {
            macros,
            encrypted: false,
        };
    }
    if has("Workbook") || has("Book") {
        return Format::Other("an Excel spreadsheet");
    }
    if has("PowerPoint Document") {
        return Format::Other("a PowerPoint presentation");
    }
    if names.iter().any(|name| name.starts_with("__substg1.0_")) {
        return Format::Other("an Outlook message");
    }
    Format::Other("an old-style Office file or Windows installer")
}

/// The names of the storages and streams of an OLE2 compound file.
///
/// Rather than follow the sector chains, every 128-byte slot after the header is read as
/// a directory entry ([MS-CFB] §2.6.1) and kept when it is shaped like one: directory
/// sectors are 512 or 4096 bytes long and start on a multiple of their size, so every
/// entry sits on a 128-byte boundary. A slot of file data that happens to look like an
/// entry only adds a name, which at worst mislabels a file that is refused anyway.
fn ole2_entry_names(bytes: &[u8]) -> HashSet<String> {
    const ENTRY: usize = 128;
    bytes
        .chunks_exact(ENTRY)
        .skip(512 / ENTRY)
        .filter_map(directory_entry_name)
        .collect()
}

fn directory_entry_name(entry: &[u8]) -> Option<String> {
    // The name length counts bytes, with the terminating NUL; at most 32 UTF-16 units.
    let name_len = usize::from(u16::from_le_bytes([entry[64], entry[65]]));
    let object_type = entry[66];
    let colour = entry[67];
    let well_formed = (4..=64).contains(&name_len)
        && name_len % 2 == 0
        && matches!(object_type, 1 | 2 | 5)
        && colour <= 1
        && entry[name_len - 2..name_len] == [0, 0];
    if !well_formed {
        return None;
    }
    let units: Vec<u16> = entry[..name_len - 2]
        .chunks_exact(2)
        .map(|unit| u16::from_le_bytes([unit[0], unit[1]]))
        .collect();
    String::from_utf16(&units).ok()
}
