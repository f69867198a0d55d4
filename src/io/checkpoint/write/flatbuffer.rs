//! A FlatBuffer laid out front to back.
//!
//! FlatBuffers builders (the `flatbuffers` crate, ONNX Runtime's C++ one) build back to front in
//! memory, which needs the whole buffer, tensor bytes included, before the first byte can be
//! written. Nothing in the format requires that order, only that every offset to an object
//! (`uoffset`: tables, vectors, strings) points FORWARD, to a higher address. So objects are
//! appended here in the order a parent comes before its children: a table is written with holes
//! for its offset fields, its children are appended after it, and each hole is patched with the
//! child's position. Holes may also be patched with positions past the end of this buffer: the
//! big byte vectors that the caller streams after it.
//!
//! Wire rules kept (the FlatBuffers binary format; checked by the `flatbuffers` crate's verifier
//! and ONNX Runtime's C++ one):
//! - bytes 0..4 hold the root table's uoffset, 4..8 the file identifier;
//! - a table starts with an soffset to its vtable (`vtable = table - soffset`), which may point
//!   backward or forward; here the vtable sits right before the table, or is an identical earlier
//!   one (deduplicated, as builders do);
//! - a vtable is u16s: its own size in bytes, the table's inline size, then one field offset
//!   (from the table start; 0 = absent) per field slot, trailing absent slots left out; aligned
//!   to 2;
//! - scalars are aligned to their size in the file, so a table starts at a multiple of its largest
//!   field (at least 4, for the soffset); offsets are u32, aligned to 4;
//! - vectors and strings start with a u32 element count aligned to 4, and their elements are
//!   aligned to the element size (8 for int64); strings end with a NUL byte that is not counted;
//! - fields equal to the schema default are left out (the caller decides which).

use std::collections::HashMap;

use flatbuffers::VOffsetT;

/// A scalar field value.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scalar {
    Bool(bool),
    I32(i32),
    F32(f32),
    I64(i64),
}

impl Scalar {
    fn size(self) -> usize {
        match self {
            Scalar::Bool(_) => 1,
            Scalar::I32(_) | Scalar::F32(_) => 4,
            Scalar::I64(_) => 8,
        }
    }

    fn put(self, out: &mut [u8]) {
        match self {
            Scalar::Bool(value) => out[0] = value as u8,
            Scalar::I32(value) => out.copy_from_slice(&value.to_le_bytes()),
            Scalar::F32(value) => out.copy_from_slice(&value.to_le_bytes()),
            Scalar::I64(value) => out.copy_from_slice(&value.to_le_bytes()),
        }
    }
}

/// A field of a table: a scalar, or an offset to a child the caller appends afterwards.
#[derive(Debug, Clone, Copy)]
pub(super) enum Field {
    Scalar(Scalar),
    Offset,
}

/// The position of a uoffset waiting for its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a hole must be patched"]
pub(super) struct Hole(usize);

/// The holes of one table's offset fields, by vtable slot.
#[derive(Debug, Default)]
pub(super) struct Holes(Vec<(VOffsetT, Hole)>);

impl Holes {
    /// The hole of the offset field in `slot` (a `VT_*` constant of the generated code).
    pub(super) fn of(&self, slot: VOffsetT) -> Hole {
        self.0
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, hole)| *hole)
            .expect("the table was written with an offset field in this slot")
    }
}

pub(super) struct ForwardBuilder {
    buffer: Vec<u8>,
    vtables: HashMap<Vec<u8>, usize>,
}

impl ForwardBuilder {
    /// A buffer holding the root offset (a hole for the root table) and the file identifier.
    pub(super) fn new(file_identifier: &str) -> (Self, Hole) {
        assert_eq!(file_identifier.len(), 4, "a file identifier has 4 bytes");
        let mut buffer = Vec::with_capacity(4096);
        buffer.extend_from_slice(&[0; 4]);
        buffer.extend_from_slice(file_identifier.as_bytes());
        let builder = ForwardBuilder {
            buffer,
            vtables: HashMap::new(),
        };
        (builder, Hole(0))
    }

    /// The end of what is written so far: where the next object would go, before alignment.
    pub(super) fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Zero bytes up to the next position `p` with `(p + shift) % alignment == 0`.
    fn pad(&mut self, alignment: usize, shift: usize) {
        let end = (self.buffer.len() + shift).next_multiple_of(alignment) - shift;
        self.buffer.resize(end, 0);
    }

    /// Sets the uoffset at `hole` to point at `target` (an absolute position, after the hole).
    /// Panics if the target is not ahead of the hole or does not fit a u32: callers lay out
    /// children after their parents and refuse buffers over 2 GiB first.
    pub(super) fn patch(&mut self, hole: Hole, target: u64) {
        let offset = target
            .checked_sub(hole.0 as u64)
            .filter(|&offset| offset > 0)
            .and_then(|offset| u32::try_from(offset).ok())
            .expect("a uoffset points forward and fits 32 bits");
        self.buffer[hole.0..hole.0 + 4].copy_from_slice(&offset.to_le_bytes());
    }

    /// Appends a table with the given fields (`slot` is a `VT_*` constant); returns its position
    /// and the holes of its offset fields.
    pub(super) fn table(&mut self, fields: &[(VOffsetT, Field)]) -> (usize, Holes) {
        let size = |field: &Field| match field {
            Field::Scalar(scalar) => scalar.size(),
            Field::Offset => 4,
        };
        // Inline layout after the 4-byte soffset: one 4-byte field first when there are 8-byte
        // fields (which then start at 8 without padding), the 8-byte fields, the other 4-byte
        // fields, then the 1-byte ones.
        let mut order: Vec<usize> = (0..fields.len()).collect();
        let has_wide = fields.iter().any(|(_, f)| size(f) == 8);
        let first_narrow = fields.iter().position(|(_, f)| size(f) == 4);
        order.sort_by_key(|&i| {
            let s = size(&fields[i].1);
            let rank = match s {
                4 if has_wide && Some(i) == first_narrow => 0,
                8 => 1,
                4 => 2,
                _ => 3,
            };
            (rank, i)
        });
        let mut field_offsets = vec![0u16; fields.len()];
        let mut end = 4usize;
        for &i in &order {
            let s = size(&fields[i].1);
            let at = end.next_multiple_of(s);
            field_offsets[i] = at as u16;
            end = at + s;
        }
        let alignment = if has_wide { 8 } else { 4 };

        // The vtable: slot count up to the last present field.
        let slots = fields
            .iter()
            .map(|(slot, _)| (*slot as usize - 4) / 2 + 1)
            .max()
            .unwrap_or(0);
        let mut vtable = vec![0u8; 4 + 2 * slots];
        vtable[0..2].copy_from_slice(&((4 + 2 * slots) as u16).to_le_bytes());
        vtable[2..4].copy_from_slice(&(end as u16).to_le_bytes());
        for ((slot, _), offset) in fields.iter().zip(&field_offsets) {
            let at = *slot as usize;
            vtable[at..at + 2].copy_from_slice(&offset.to_le_bytes());
        }

        let table = match self.vtables.get(&vtable) {
            Some(&existing) => {
                self.pad(alignment, 0);
                let table = self.buffer.len();
                self.put_soffset(table, existing);
                table
            }
            None => {
                // The vtable ends where the table starts (a multiple of 4, so the vtable's even
                // length keeps it 2-aligned).
                self.pad(alignment, vtable.len());
                let position = self.buffer.len();
                self.buffer.extend_from_slice(&vtable);
                let table = self.buffer.len();
                self.vtables.insert(vtable, position);
                self.put_soffset(table, position);
                table
            }
        };
        self.buffer.resize(table + end, 0);
        let mut holes = Holes::default();
        for ((slot, field), offset) in fields.iter().zip(&field_offsets) {
            let at = table + *offset as usize;
            match field {
                Field::Scalar(scalar) => scalar.put(&mut self.buffer[at..at + scalar.size()]),
                Field::Offset => holes.0.push((*slot, Hole(at))),
            }
        }
        (table, holes)
    }

    fn put_soffset(&mut self, table: usize, vtable: usize) {
        let soffset = i32::try_from(table as i64 - vtable as i64).expect("a table near its vtable");
        self.buffer.resize(table + 4, 0);
        self.buffer[table..table + 4].copy_from_slice(&soffset.to_le_bytes());
    }

    /// Appends a string (length, UTF-8 bytes, NUL); returns its position.
    pub(super) fn string(&mut self, text: &str) -> usize {
        let position = self.length_prefix(text.len(), 1);
        self.buffer.extend_from_slice(text.as_bytes());
        self.buffer.push(0);
        position
    }

    /// Appends a vector of int64 (elements 8-aligned); returns its position.
    pub(super) fn int64_vector(&mut self, values: &[i64]) -> usize {
        let position = self.length_prefix(values.len(), 8);
        for value in values {
            self.buffer.extend_from_slice(&value.to_le_bytes());
        }
        position
    }

    /// Appends a vector of bytes (for small ones; big byte vectors are streamed after the
    /// buffer); returns its position.
    pub(super) fn byte_vector(&mut self, bytes: &[u8]) -> usize {
        let position = self.length_prefix(bytes.len(), 1);
        self.buffer.extend_from_slice(bytes);
        position
    }

    /// Appends a vector of `count` offsets; returns its position and one hole per element.
    pub(super) fn offset_vector(&mut self, count: usize) -> (usize, Vec<Hole>) {
        let position = self.length_prefix(count, 4);
        let first = self.buffer.len();
        self.buffer.resize(first + 4 * count, 0);
        (position, (0..count).map(|i| Hole(first + 4 * i)).collect())
    }

    /// Appends the u32 element count of a vector whose elements (of `alignment`) follow it.
    fn length_prefix(&mut self, count: usize, alignment: usize) -> usize {
        self.pad(alignment.max(4), 4);
        let position = self.buffer.len();
        let count = u32::try_from(count).expect("a vector of at most 2^32 - 1 elements");
        self.buffer.extend_from_slice(&count.to_le_bytes());
        position
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.buffer
    }
}

/// Where a byte vector streamed after the buffer goes: the position of its u32 length prefix
/// after `end` such that its elements start at a multiple of `alignment` (at least 4).
pub(super) fn byte_vector_position(end: u64, alignment: u64) -> u64 {
    (end + 4).next_multiple_of(alignment.max(4)) - 4
}
