//! What can go wrong with an XDM package, each said as one plain sentence: the refusals
//! that stop a package from being read ([`XdmError`]), the problems a package that was
//! read still carries ([`Problem`]), and the reasons a package could not be written
//! ([`WriteError`]).

use std::fmt;

/// Why an XDM package was not read at all. `Display` gives one plain sentence for the
/// person who received it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XdmError {
    /// The bytes are not a ZIP archive.
    NotZip,
    /// A ZIP archive that stops before its end (cut short in transit or when saved).
    Truncated,
    /// A ZIP archive whose structure is inconsistent, or a file in it fails its checksum.
    Damaged,
    /// More entries than [`XdmLimits::max_entries`](super::XdmLimits::max_entries).
    TooManyEntries {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The files unpack to more than
    /// [`XdmLimits::max_total_size`](super::XdmLimits::max_total_size) bytes together.
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: u64,
    },
    /// A file expands more than
    /// [`XdmLimits::max_ratio`](super::XdmLimits::max_ratio) times its stored size: the
    /// shape of a "zip bomb".
    CompressionRatio {
        /// The file's name in the archive.
        name: String,
    },
    /// A name with more folders than
    /// [`XdmLimits::max_depth`](super::XdmLimits::max_depth).
    TooDeep {
        /// The file's name in the archive.
        name: String,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A name that could point outside the package or hide what it is.
    UnsafeName {
        /// The name in the archive.
        name: String,
        /// What is wrong with it.
        fault: NameFault,
    },
    /// Two entries with the same name, or names that differ only in letter case (XDM
    /// receivers match names without regard to case).
    DuplicateName {
        /// The name in the archive.
        name: String,
    },
    /// A symbolic link, which has no place in an XDM package.
    Link {
        /// The name in the archive.
        name: String,
    },
    /// An entry is encrypted (password-protected).
    Encrypted,
    /// An entry is compressed with a method other than stored or deflate.
    UnsupportedCompression {
        /// The name in the archive.
        name: String,
    },
    /// A ZIP archive without any `IHE_XDM/<subset>/METADATA.XML`.
    NoMetadata,
    /// A METADATA.XML with a document type declaration: refused so that entity
    /// declarations (billion laughs, external entities) are never expanded.
    MetadataDtd {
        /// The path of the METADATA.XML in the archive.
        path: String,
    },
    /// A METADATA.XML that cannot be read as an ebRS `SubmitObjectsRequest`.
    MetadataMalformed {
        /// The path of the METADATA.XML in the archive.
        path: String,
        /// What is wrong with it.
        fault: MetadataFault,
    },
}

/// What is wrong with a name in the archive ([`XdmError::UnsafeName`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameFault {
    /// A `..` component: it climbs out of the folder it is in.
    ParentFolder,
    /// Starts with `/` or a drive letter.
    Absolute,
    /// Contains `\`, which some systems read as a folder separator.
    Backslash,
    /// Contains NUL or another control character.
    ControlCharacter,
    /// An empty or `.` component (`a//b`, `./a`), or an empty name.
    Irregular,
}

/// What is wrong with a METADATA.XML ([`XdmError::MetadataMalformed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataFault {
    /// Not UTF-8 text.
    NotUtf8,
    /// Not well-formed XML; the line of the first error.
    Syntax {
        /// 1-based line number.
        line: u32,
    },
    /// Well-formed, but not an ebRS `SubmitObjectsRequest` with a `RegistryObjectList`.
    NotSubmitObjectsRequest,
}

impl fmt::Display for XdmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdmError::NotZip => {
                f.write_str("This attachment is not an XDM package: it is not a ZIP archive.")
            }
            XdmError::Truncated => f.write_str(
                "The XDM package is incomplete (it was cut short in transit or when it was \
                 saved); ask the sender to send it again.",
            ),
            XdmError::Damaged => f.write_str(
                "The XDM package is damaged and cannot be opened; ask the sender to send it \
                 again.",
            ),
            XdmError::TooManyEntries { limit } => write!(
                f,
                "The XDM package holds more than {limit} files, more than this system opens."
            ),
            XdmError::TooLarge { limit } => write!(
                f,
                "The XDM package unpacks to more than {}, more than this system opens.",
                human_size(*limit)
            ),
            XdmError::CompressionRatio { name } => write!(
                f,
                "The XDM package was not opened: the file {} in it expands to far more than \
                 its stored size, a pattern used to overwhelm computer systems.",
                quoted(name)
            ),
            XdmError::TooDeep { name, limit } => write!(
                f,
                "The XDM package was not opened: the file {} is nested in more than {limit} \
                 folders.",
                quoted(name)
            ),
            XdmError::UnsafeName { name, fault } => {
                let why = match fault {
                    NameFault::ParentFolder => "climbs out of its folder (\"..\")",
                    NameFault::Absolute => "is an absolute path",
                    NameFault::Backslash => "contains a backslash",
                    NameFault::ControlCharacter => "contains a control character",
                    NameFault::Irregular => "is not a regular file name",
                };
                write!(
                    f,
                    "The XDM package was not opened: the file name {} {why}, which could \
                     point outside the package.",
                    quoted(name)
                )
            }
            XdmError::DuplicateName { name } => write!(
                f,
                "The XDM package was not opened: it holds two files named {}, so it is not \
                 clear which one is meant.",
                quoted(name)
            ),
            XdmError::Link { name } => write!(
                f,
                "The XDM package was not opened: {} is a link to another file, which an XDM \
                 package may not contain.",
                quoted(name)
            ),
            XdmError::Encrypted => f.write_str(
                "The XDM package is password-protected and cannot be opened here; ask the \
                 sender to send it without a password.",
            ),
            XdmError::UnsupportedCompression { name } => write!(
                f,
                "The XDM package cannot be opened: the file {} in it is compressed in a way \
                 this system does not read.",
                quoted(name)
            ),
            XdmError::NoMetadata => f.write_str(
                "This ZIP archive is not an XDM package: it has no IHE_XDM folder with a \
                 METADATA.XML list of contents.",
            ),
            XdmError::MetadataDtd { path } => write!(
                f,
                "The XDM package was not opened: its list of contents ({}) contains a \
                 document type declaration (DTD), which is not allowed.",
                plain(path)
            ),
            XdmError::MetadataMalformed { path, fault } => {
                let why = match fault {
                    MetadataFault::NotUtf8 => "it is not UTF-8 text".to_owned(),
                    MetadataFault::Syntax { line } => {
                        format!("it is not well-formed XML (the first error is on line {line})")
                    }
                    MetadataFault::NotSubmitObjectsRequest => {
                        "it is not an XDS SubmitObjectsRequest".to_owned()
                    }
                };
                write!(
                    f,
                    "The XDM package cannot be read: its list of contents ({}) is damaged, as \
                     {why}.",
                    plain(path)
                )
            }
        }
    }
}

impl std::error::Error for XdmError {}

/// Something wrong in a package that was still read: its documents may be shown, with
/// this said beside them. `Display` gives one plain sentence for a clinician.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The document's SHA-1 differs from the `hash` its sender recorded.
    FingerprintMismatch {
        /// The document's title, or its file name.
        document: String,
    },
    /// The document's length differs from the `size` its sender recorded.
    SizeMismatch {
        /// The document's title, or its file name.
        document: String,
        /// The size in the metadata, in bytes.
        recorded: u64,
        /// The size of the file in the package, in bytes.
        actual: u64,
    },
    /// The metadata lists a document whose file is not in the package.
    MissingDocument {
        /// The document's title, or its file name.
        document: String,
    },
    /// The metadata names the document's file with a path that leaves its subset
    /// folder (or a URL); it was not followed.
    ReferenceOutsideFolder {
        /// The document's title, or its file name.
        document: String,
        /// The `URI` slot as written.
        uri: String,
    },
    /// A file in a subset folder that the metadata does not list; it was not opened.
    UnlistedFile {
        /// The file's name in the archive.
        path: String,
    },
    /// The package names more than one patient identifier.
    DifferentPatients,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::FingerprintMismatch { document } => write!(
                f,
                "The document {} does not match the fingerprint its sender recorded; it may \
                 have been changed.",
                quoted(document)
            ),
            Problem::SizeMismatch {
                document,
                recorded,
                actual,
            } => write!(
                f,
                "The document {} is not the size its sender recorded ({actual} bytes instead \
                 of {recorded}); it may have been changed or cut short.",
                quoted(document)
            ),
            Problem::MissingDocument { document } => write!(
                f,
                "The document {} is listed in the package, but its file is missing.",
                quoted(document)
            ),
            Problem::ReferenceOutsideFolder { document, uri } => write!(
                f,
                "The document {} points to a file outside the package ({}), so it was not \
                 opened.",
                quoted(document),
                quoted(uri)
            ),
            Problem::UnlistedFile { path } => write!(
                f,
                "The package holds a file that its list of contents does not mention ({}); \
                 it was not opened.",
                quoted(path)
            ),
            Problem::DifferentPatients => f.write_str(
                "The documents in this package do not all name the same patient; check the \
                 patient on each document before filing it.",
            ),
        }
    }
}

/// Why [`write_xdm`](super::write_xdm) could not make a package. `Display` gives one
/// plain sentence for the person sending.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// No documents were given.
    NoDocuments,
    /// More documents than file names `DOC0001`…`DOC9999` allow.
    TooManyDocuments,
    /// The sender's or a recipient's address is not a usable e-mail address.
    InvalidAddress {
        /// The address as given.
        address: String,
    },
    /// A recipient is required (intendedRecipient) and none was given.
    NoRecipients,
    /// `source_id` is not an OID (digits and dots, at most 64 characters).
    InvalidSourceId,
    /// The patient identifier is not an HL7 CX value `id^^^&OID&ISO`.
    InvalidPatientId,
    /// A document's MIME type is not of the form `type/subtype`.
    InvalidMimeType {
        /// The type as given.
        mime_type: String,
    },
    /// `now` or a creation time is outside the years 1980–9999.
    InvalidTime,
    /// The ZIP writer failed (not expected when writing to memory).
    Zip,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::NoDocuments => {
                f.write_str("An XDM package needs at least one document; attach one.")
            }
            WriteError::TooManyDocuments => {
                f.write_str("An XDM package can hold at most 9999 documents; send fewer.")
            }
            WriteError::InvalidAddress { address } => write!(
                f,
                "The address {} is not a valid Direct address, so it cannot go into an XDM \
                 package.",
                quoted(address)
            ),
            WriteError::NoRecipients => {
                f.write_str("An XDM package needs at least one recipient; add one.")
            }
            WriteError::InvalidSourceId => f.write_str(
                "The configured XDM source identifier is not an OID (digits separated by \
                 dots); ask your administrator to correct it.",
            ),
            WriteError::InvalidPatientId => f.write_str(
                "The patient identifier is not in the form an XDM package needs \
                 (id^^^&OID&ISO); correct it or leave it out.",
            ),
            WriteError::InvalidMimeType { mime_type } => write!(
                f,
                "The document type {} is not a valid MIME type, so it cannot go into an XDM \
                 package.",
                quoted(mime_type)
            ),
            WriteError::InvalidTime => {
                f.write_str("The time given for the XDM package is outside the years 1980 to 9999.")
            }
            WriteError::Zip => f.write_str("The XDM package could not be built."),
        }
    }
}

impl std::error::Error for WriteError {}

/// A name from the package in curly quotes, for a sentence: control characters removed
/// and a long name shortened, since it comes from the sender.
pub(super) fn quoted(name: &str) -> String {
    format!("“{}”", plain(name))
}

/// [`quoted`] without the quotes.
pub(super) fn plain(name: &str) -> String {
    const MAX_CHARS: usize = 80;
    let clean: String = name
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() > MAX_CHARS {
        let short: String = clean.chars().take(MAX_CHARS - 1).collect();
        return format!("{short}…");
    }
    clean
}

/// A size in binary units, as the limits are set ("64 MiB").
fn human_size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}
