//! `docker rename`: a new name under Docker's rules, refused (409) when another container has
//! it.

use strata_core::{Error, Result};

use super::{record, Containers};

impl Containers {
    pub fn rename(&self, key: &str, new_name: &str) -> Result<()> {
        if new_name.is_empty() {
            return Err(Error::invalid("Neither old nor new names may be empty"));
        }
        let name = record::validate_name(new_name)?;
        let c = self.get(key)?;
        // The table lock is held from the check to the change, so two renames (or a create)
        // cannot take the same name.
        let table = self.table();
        let old = c.record().name.clone();
        if old == name {
            return Err(Error::invalid(
                "Renaming a container with the same name as its current name",
            ));
        }
        if let Some(other) = table.values().find(|o| o.record().name == name) {
            return Err(Error::busy(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                other.record().id
            )));
        }
        let mut rec = c.record();
        rec.name = name;
        if let Err(e) = rec.save(&self.root) {
            rec.name = old;
            return Err(e);
        }
        Ok(())
    }
}
