//! The option rules drivers share beyond [`StorageOpts`]' own parsers
//! ([`StorageOpts::flag`], [`StorageOpts::bytes`]).

use crate::error::{Error, Result};
use crate::layer::{CreateOpts, LayerKind};
#[cfg(doc)]
use crate::options::StorageOpts;

/// The quota a new layer gets: its own `size=`, else `default` (the daemon-wide size) for a
/// read-write layer. `size=` on a read-only (image) layer is refused: only containers grow.
pub fn layer_size(opts: &CreateOpts, default: Option<u64>) -> Result<Option<u64>> {
    match (opts.storage_opts.size()?, opts.kind) {
        (Some(_), LayerKind::ReadOnly) => Err(Error::invalid(
            "the size= storage option applies to read-write layers only",
        )),
        (Some(s), LayerKind::ReadWrite) => Ok(Some(s)),
        (None, LayerKind::ReadWrite) => Ok(default),
        (None, LayerKind::ReadOnly) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::StorageOpts;

    #[test]
    fn size_applies_to_writable_layers_with_the_daemon_default() {
        let sized = StorageOpts::parse(&["size=1G"]).unwrap();
        let rw = CreateOpts::read_write();
        assert_eq!(layer_size(&rw, Some(5)).unwrap(), Some(5));
        assert_eq!(
            layer_size(&rw.clone().with_storage_opts(sized.clone()), Some(5)).unwrap(),
            Some(1 << 30)
        );
        assert_eq!(layer_size(&CreateOpts::read_only(), Some(5)).unwrap(), None);
        let err = layer_size(&CreateOpts::read_only().with_storage_opts(sized), None).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }
}
