//! Streaming protobuf encoding into a file with ordinary writes.
//!
//! prost encodes into a `BufMut`. Encoding into a writable memory map of the output turns a full
//! disk into SIGBUS; encoding into a `Vec` holds the whole model in memory. `FileSink` is a
//! `BufMut` over a 1 MiB buffer that is written out whenever it fills; large byte fields (tensor
//! data) are written straight from their source, or, when they are a slice of a mapped input file,
//! copied from that file by the kernel (`put_mapped`). The first write error is kept and reported
//! after encoding (prost's encoder cannot fail midway), and nothing more is written after it.

use std::fs::File;
use std::io::Write;

use bytes::BufMut;
use bytes::buf::UninitSlice;

use crate::io::fs::CopyRangeError;

const BUFFER: usize = 1 << 20;

/// Mapped slices from this size on are copied by the kernel; smaller ones go through the buffer
/// (one system call per tensor would cost more than copying a few pages).
const KERNEL_COPY_MIN: usize = 64 << 10;

pub struct FileSink<'f> {
    file: &'f mut File,
    buffer: Vec<u8>,
    error: Option<std::io::Error>,
    written: u64,
    /// Cleared once the kernel refuses to copy between the input and this file.
    kernel_copy: bool,
}

impl<'f> FileSink<'f> {
    pub fn new(file: &'f mut File) -> Self {
        FileSink {
            file,
            buffer: Vec::with_capacity(BUFFER),
            error: None,
            written: 0,
            kernel_copy: true,
        }
    }

    /// Writes `bytes`; when they are the bytes at `offset` of the mapped file `source` (as
    /// `MappedFile::offset_of` tells), large runs are copied from that file in the kernel instead
    /// of from the mapping, so their pages are never faulted into this process.
    pub fn put_mapped(&mut self, bytes: &[u8], source: Option<(&File, u64)>) {
        let Some((source, offset)) = source.filter(|_| self.kernel_copy) else {
            return self.put_slice(bytes);
        };
        if bytes.len() < KERNEL_COPY_MIN {
            return self.put_slice(bytes);
        }
        self.flush_buffer();
        if self.error.is_some() {
            return;
        }
        let length = bytes.len() as u64;
        match crate::io::fs::copy_range(source, offset, length, self.file) {
            Ok(()) => self.written += length,
            Err(CopyRangeError::Unsupported { copied }) => {
                self.kernel_copy = false;
                self.written += copied;
                self.write_out(&bytes[copied as usize..]);
            }
            Err(CopyRangeError::Io(error)) => {
                self.error = Some(error);
                self.written += length;
            }
        }
    }

    /// Writes `count` zero bytes (alignment padding).
    pub fn put_zeros(&mut self, count: usize) {
        const ZEROS: [u8; 64] = [0; 64];
        let mut left = count;
        while left > 0 {
            let n = left.min(ZEROS.len());
            self.put_slice(&ZEROS[..n]);
            left -= n;
        }
    }

    fn write_out(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = crate::io::interrupt::check().and_then(|()| self.file.write_all(bytes)) {
            self.error = Some(e);
        }
        self.written += bytes.len() as u64;
    }

    fn flush_buffer(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        self.write_out(&buffer);
        self.buffer = buffer;
        self.buffer.clear();
    }

    /// Writes what is buffered; returns the number of bytes encoded, or the first write error.
    pub fn finish(mut self) -> std::io::Result<u64> {
        self.flush_buffer();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(self.written),
        }
    }
}

// SAFETY: `chunk_mut` returns the buffer's spare capacity, and `advance_mut` only counts bytes the
// caller initialised in it (the contract of `BufMut::advance_mut`).
unsafe impl BufMut for FileSink<'_> {
    fn remaining_mut(&self) -> usize {
        // Unbounded (a file); prost only checks that the message fits.
        usize::MAX / 2
    }

    unsafe fn advance_mut(&mut self, count: usize) {
        let length = self.buffer.len() + count;
        assert!(length <= self.buffer.capacity(), "advance past the chunk");
        // SAFETY: the caller initialised `count` bytes of the spare capacity.
        unsafe { self.buffer.set_len(length) };
        if self.buffer.len() == self.buffer.capacity() {
            self.flush_buffer();
        }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.buffer.len() == self.buffer.capacity() {
            self.flush_buffer();
        }
        UninitSlice::uninit(self.buffer.spare_capacity_mut())
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= BUFFER / 4 {
            // Tensor bytes: write them from where they are (often the input's mapping).
            self.flush_buffer();
            self.write_out(src);
            return;
        }
        if self.buffer.len() + src.len() > self.buffer.capacity() {
            self.flush_buffer();
        }
        self.buffer.extend_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Slices of a mapped file come out the same whether the kernel copies them (same file
    /// system) or the sink writes them from the mapping (the kernel refuses: another file system
    /// type, e.g. a tmpfs next to a disk), mixed with buffered writes.
    #[test]
    fn mapped_slices_are_copied_exactly() {
        use std::io::{Read, Seek};
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        let content: Vec<u8> = (0..3 * BUFFER + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&input, &content).unwrap();
        let mapped = crate::io::fs::MappedFile::open(&input).unwrap();
        let bytes = mapped.bytes();
        let pieces = [
            bytes.slice(5..BUFFER + 7),
            bytes.slice(100..200),
            bytes.slice(..),
            bytes.slice(BUFFER..BUFFER + KERNEL_COPY_MIN),
        ];
        let mut expected = Vec::new();
        for piece in &pieces {
            expected.extend_from_slice(b"head");
            expected.extend_from_slice(piece);
        }
        let mut outputs = vec![tempfile::tempfile_in(dir.path()).unwrap()];
        if let Ok(shm) = tempfile::tempfile_in("/dev/shm") {
            outputs.push(shm);
        }
        for mut file in outputs {
            let mut sink = FileSink::new(&mut file);
            for piece in &pieces {
                sink.put_slice(b"head");
                let origin = mapped.offset_of(piece).map(|at| (mapped.file(), at));
                assert!(origin.is_some());
                sink.put_mapped(piece, origin);
            }
            assert_eq!(sink.finish().unwrap(), expected.len() as u64);
            file.rewind().unwrap();
            let mut written = Vec::new();
            file.read_to_end(&mut written).unwrap();
            assert!(written == expected, "{} bytes written", written.len());
        }
        assert_eq!(mapped.offset_of(&bytes[3..9]), Some(3));
        assert_eq!(mapped.offset_of(&[]), None);
        assert_eq!(mapped.offset_of(&content[3..9]), None);
    }

    #[test]
    fn streamed_encoding_equals_in_memory_encoding() {
        use crate::generated::onnx::{GraphProto, ModelProto, TensorProto};
        let big = bytes::Bytes::from(vec![7u8; 3 * BUFFER + 5]);
        let model = ModelProto {
            ir_version: Some(8),
            graph: Some(GraphProto {
                initializer: (0..300)
                    .map(|i| TensorProto {
                        name: Some(format!("t{i}")),
                        raw_data: Some(if i == 7 { big.clone() } else { big.slice(..i) }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut file = tempfile::tempfile().unwrap();
        let mut sink = FileSink::new(&mut file);
        model.encode(&mut sink).unwrap();
        let written = sink.finish().unwrap();
        assert_eq!(written as usize, model.encoded_len());
        use std::io::{Read, Seek};
        file.rewind().unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, model.encode_to_vec());
    }
}
