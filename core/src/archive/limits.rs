//! Caps on tar extension headers (PAX `x`/`g`, GNU long name `L` and long link `K`).
//!
//! Their bodies are read into memory, so a hostile layer could otherwise ask for gigabytes with
//! one size field, or chain any number of headers before one file entry. The budget counts
//! every extension header between two file entries, whatever its kind, and is charged with a
//! header's size *before* its body is read, so a refused header costs no allocation.
//!
//! Real layers need a few KiB at most: a path and a link name (PATH_MAX is 4 KiB) and a handful
//! of xattrs (Linux caps all names of one inode at 64 KiB). Go's archive/tar, which wrote most
//! layers, refuses PAX and GNU headers over 1 MiB too. Both the apply path
//! (`archive::reader`) and the tar-split recorder (`store::tarsplit`) use this budget.

/// Bytes of extension header bodies allowed before one file entry, all headers together.
pub(crate) const MAX_EXTENSION_BYTES: u64 = 1 << 20;

/// Extension headers allowed before one file entry. A real tar has at most a `g`, an `x` and
/// an `L`/`K` pair; 16 leaves room for odd writers while keeping a chain of empty headers (no
/// memory, but work per header) short.
pub(crate) const MAX_EXTENSION_HEADERS: u32 = 16;

/// Why an entry's extension headers were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionLimit {
    /// The headers of one entry add up to more bytes than [`MAX_EXTENSION_BYTES`] (a single
    /// header claiming a huge size lands here before anything is read).
    #[error(
        "extension headers of one entry claim {total} bytes, over the cap of {cap} bytes per \
         entry"
    )]
    TooManyBytes { total: u64, cap: u64 },
    /// More than [`MAX_EXTENSION_HEADERS`] headers precede one entry.
    #[error("more than {cap} extension headers precede one entry (over the cap)")]
    TooManyHeaders { cap: u32 },
}

/// What the extension headers seen since the last file entry used up.
#[derive(Debug, Default, Clone)]
pub(crate) struct ExtensionBudget {
    bytes: u64,
    headers: u32,
}

impl ExtensionBudget {
    /// Accounts one more extension header whose body is `size` bytes. Call before reading it.
    pub fn charge(&mut self, size: u64) -> Result<(), ExtensionLimit> {
        self.headers += 1;
        if self.headers > MAX_EXTENSION_HEADERS {
            return Err(ExtensionLimit::TooManyHeaders {
                cap: MAX_EXTENSION_HEADERS,
            });
        }
        let total = self.bytes.saturating_add(size);
        if total > MAX_EXTENSION_BYTES {
            return Err(ExtensionLimit::TooManyBytes {
                total,
                cap: MAX_EXTENSION_BYTES,
            });
        }
        self.bytes = total;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_bytes_and_headers_across_the_chain() {
        let mut b = ExtensionBudget::default();
        b.charge(MAX_EXTENSION_BYTES / 2).unwrap();
        b.charge(MAX_EXTENSION_BYTES / 2).unwrap();
        assert_eq!(
            b.charge(1),
            Err(ExtensionLimit::TooManyBytes {
                total: MAX_EXTENSION_BYTES + 1,
                cap: MAX_EXTENSION_BYTES
            })
        );
        let mut b = ExtensionBudget::default();
        assert!(matches!(
            b.charge(u64::MAX),
            Err(ExtensionLimit::TooManyBytes {
                total: u64::MAX,
                ..
            })
        ));
        let mut b = ExtensionBudget::default();
        for _ in 0..MAX_EXTENSION_HEADERS {
            b.charge(0).unwrap();
        }
        assert_eq!(
            b.charge(0),
            Err(ExtensionLimit::TooManyHeaders {
                cap: MAX_EXTENSION_HEADERS
            })
        );
    }
}
