//! The output buffer of `write_diff`: headers are copied in, file content is read by `pread`
//! straight into it (one copy fewer than reading into a scratch buffer and writing that), and
//! full buffers go to the sink: copied into a writer, or handed over whole to a chunk
//! consumer (no copy at all).

use std::io::{self, Write};
use std::os::fd::AsRawFd;

/// Where full buffers go.
pub(crate) enum Sink<'a> {
    Writer(&'a mut dyn Write),
    /// Takes each full buffer by value.
    Chunks(&'a mut dyn FnMut(Vec<u8>) -> io::Result<()>),
}

pub(crate) struct TarOut<'a> {
    buf: Vec<u8>,
    capacity: usize,
    sink: Sink<'a>,
}

impl<'a> TarOut<'a> {
    pub fn new(capacity: usize, sink: Sink<'a>) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            capacity,
            sink,
        }
    }

    fn room(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    fn drain(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match &mut self.sink {
            Sink::Writer(w) => {
                w.write_all(&self.buf)?;
                self.buf.clear();
            }
            Sink::Chunks(send) => {
                let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.capacity));
                send(full)?;
            }
        }
        Ok(())
    }

    /// One `pread` of at most `want` bytes of `file` at `offset`, appended to the output.
    /// Returns (bytes read, bytes asked of the kernel): the buffer may have had less room
    /// than `want`. Fewer read than asked means the end of the file (a regular file's read is
    /// short only there).
    pub fn read_from(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        want: u64,
    ) -> io::Result<(usize, usize)> {
        if self.room() == 0 || (self.room() as u64) < want.min(self.buf.capacity() as u64 / 4) {
            self.drain()?;
        }
        let n = (self.room() as u64).min(want) as usize;
        let spare = self.buf.spare_capacity_mut();
        loop {
            // SAFETY: `spare` has at least `n` writable bytes; pread writes at most `n`.
            let r = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    n,
                    offset as libc::off_t,
                )
            };
            if r >= 0 {
                let r = r as usize;
                // SAFETY: pread initialised the first `r` (<= n) spare bytes.
                unsafe { self.buf.set_len(self.buf.len() + r) };
                return Ok((r, n));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Drops the last `n` bytes appended (a read that went one byte past the expected end).
    pub fn unread(&mut self, n: usize) {
        let len = self.buf.len().saturating_sub(n);
        self.buf.truncate(len);
    }
}

impl Write for TarOut<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() > self.room() {
            self.drain()?;
        }
        self.buf.extend_from_slice(data);
        if self.room() == 0 {
            self.drain()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        match &mut self.sink {
            Sink::Writer(w) => w.flush(),
            Sink::Chunks(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_interleave_in_order() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut sink = Vec::new();
        {
            let mut out = TarOut::new(4096, Sink::Writer(&mut sink));
            out.write_all(b"head").unwrap();
            let mut pos = 0u64;
            while pos < data.len() as u64 {
                let (n, _) = out.read_from(&file, pos, data.len() as u64 - pos).unwrap();
                assert!(n > 0);
                pos += n as u64;
            }
            assert_eq!(out.read_from(&file, pos, 1).unwrap(), (0, 1));
            out.write_all(&[9u8; 5000]).unwrap();
            assert_eq!(out.read_from(&file, 0, 3).unwrap(), (3, 3));
            out.unread(1);
            out.flush().unwrap();
        }
        let mut want = b"head".to_vec();
        want.extend_from_slice(&data);
        want.extend_from_slice(&[9u8; 5000]);
        want.extend_from_slice(&data[..2]);
        assert_eq!(sink, want);
        // The same through whole chunks.
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        {
            let mut send = |c: Vec<u8>| {
                chunks.push(c);
                Ok(())
            };
            let mut out = TarOut::new(4096, Sink::Chunks(&mut send));
            out.write_all(b"head").unwrap();
            let mut pos = 0u64;
            while pos < data.len() as u64 {
                let (n, _) = out.read_from(&file, pos, data.len() as u64 - pos).unwrap();
                pos += n as u64;
            }
            out.write_all(&[9u8; 5000]).unwrap();
            assert_eq!(out.read_from(&file, 0, 3).unwrap(), (3, 3));
            out.unread(1);
            out.flush().unwrap();
        }
        assert!(chunks.len() > 3);
        assert_eq!(chunks.concat(), want);
    }
}
