//! Pass 2 of writing: the laid-out files streamed to disk with ordinary writes (`io::sink`), never
//! through a writable mapping. Tensor bytes that are a slice of a file the checkpoint was read
//! from are copied from that file in the kernel, so the input's pages are not faulted into this
//! process; other bytes are written from memory. Memory use does not grow with the checkpoint:
//! the head of the FlatBuffer (metadata) plus a 1 MiB buffer.

use std::fs::File;

use bytes::BufMut;

use super::super::external::DataFileLayout;
use super::super::model::Checkpoint;
use super::layout::Layout;
use crate::io::sink::FileSink;

/// Writes the checkpoint file laid out in `layout` to `out`.
pub(super) fn checkpoint_file(
    checkpoint: &Checkpoint,
    layout: &Layout,
    out: &mut File,
) -> std::io::Result<()> {
    let mut sink = FileSink::new(out);
    sink.put_slice(&layout.head);
    let mut end = layout.head.len() as u64;
    for vector in &layout.vectors {
        sink.put_zeros((vector.position - end) as usize);
        let length = u32::try_from(vector.bytes.len()).map_err(std::io::Error::other)?;
        sink.put_slice(&length.to_le_bytes());
        sink.put_mapped(&vector.bytes, checkpoint.origin(&vector.bytes));
        end = vector.position + 4 + vector.bytes.len() as u64;
    }
    expect_written(sink.finish()?, layout.size)
}

/// Writes the external data file laid out in `data` to `out`.
pub(super) fn data_file(
    checkpoint: &Checkpoint,
    data: &DataFileLayout,
    out: &mut File,
) -> std::io::Result<()> {
    let mut sink = FileSink::new(out);
    let mut end = 0u64;
    for (offset, bytes) in &data.runs {
        sink.put_zeros((offset - end) as usize);
        sink.put_mapped(bytes, checkpoint.origin(bytes));
        end = offset + bytes.len() as u64;
    }
    expect_written(sink.finish()?, data.size)
}

fn expect_written(written: u64, expected: u64) -> std::io::Result<()> {
    if written == expected {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "wrote {written} bytes, the layout has {expected}"
        )))
    }
}
