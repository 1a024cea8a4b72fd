//! The Thrift compact protocol, write side only: what Parquet page headers and footers need.
//!
//! Parquet's metadata is Thrift structs in the compact protocol: each field is a header byte
//! (the field id as a delta from the previous one, and a type nibble) followed by its value;
//! integers are zigzag varints, strings and binaries a varint length and the bytes, lists a
//! header with the element type and count, structs end with a zero byte.

/// Compact-protocol type nibbles.
mod ty {
    pub const TRUE: u8 = 1;
    pub const FALSE: u8 = 2;
    pub const I8: u8 = 3;
    pub const I16: u8 = 4;
    pub const I32: u8 = 5;
    pub const I64: u8 = 6;
    pub const BINARY: u8 = 8;
    pub const LIST: u8 = 9;
    pub const STRUCT: u8 = 12;
}

/// Element types of a list.
#[derive(Clone, Copy, Debug)]
pub enum Elem {
    /// `bool` (one byte each: 1 true, 2 false).
    Bool,
    /// `i32` and enums.
    I32,
    /// `i64`.
    I64,
    /// `binary` and `string`.
    Binary,
    /// Structs.
    Struct,
}

impl Elem {
    fn nibble(self) -> u8 {
        match self {
            Elem::Bool => ty::TRUE,
            Elem::I32 => ty::I32,
            Elem::I64 => ty::I64,
            Elem::Binary => ty::BINARY,
            Elem::Struct => ty::STRUCT,
        }
    }
}

/// Appends an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag form of a signed integer (small magnitudes become small varints).
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Writes one top-level struct; nested structs and list elements are written through it.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// Field id of the previous field of each open struct (the innermost last).
    last_ids: Vec<i16>,
}

impl<'a> Writer<'a> {
    /// Starts a struct at the end of `out`; [`finish`](Self::finish) closes it.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self {
            out,
            last_ids: vec![0],
        }
    }

    fn field(&mut self, id: i16, nibble: u8) {
        let last = self.last_ids.last_mut().expect("an open struct");
        let delta = id - *last;
        if (1..=15).contains(&delta) {
            self.out.push(((delta as u8) << 4) | nibble);
        } else {
            self.out.push(nibble);
            put_varint(self.out, zigzag(i64::from(id)));
        }
        *last = id;
    }

    /// An `i32` (or enum) field.
    pub fn i32(&mut self, id: i16, v: i32) -> &mut Self {
        self.field(id, ty::I32);
        put_varint(self.out, zigzag(i64::from(v)));
        self
    }

    /// An `i16` field.
    pub fn i16(&mut self, id: i16, v: i16) -> &mut Self {
        self.field(id, ty::I16);
        put_varint(self.out, zigzag(i64::from(v)));
        self
    }

    /// An `i64` field.
    pub fn i64(&mut self, id: i16, v: i64) -> &mut Self {
        self.field(id, ty::I64);
        put_varint(self.out, zigzag(v));
        self
    }

    /// An `i8` field.
    pub fn i8(&mut self, id: i16, v: i8) -> &mut Self {
        self.field(id, ty::I8);
        self.out.push(v as u8);
        self
    }

    /// A `bool` field (the value is the type nibble).
    pub fn bool(&mut self, id: i16, v: bool) -> &mut Self {
        self.field(id, if v { ty::TRUE } else { ty::FALSE });
        self
    }

    /// A `binary` or `string` field.
    pub fn binary(&mut self, id: i16, v: &[u8]) -> &mut Self {
        self.field(id, ty::BINARY);
        self.raw_binary(v);
        self
    }

    /// Opens a struct field; close it with [`end`](Self::end).
    pub fn begin(&mut self, id: i16) -> &mut Self {
        self.field(id, ty::STRUCT);
        self.last_ids.push(0);
        self
    }

    /// Closes the innermost open struct (a field struct or a list element).
    pub fn end(&mut self) -> &mut Self {
        self.out.push(0);
        self.last_ids.pop();
        self
    }

    /// Opens a list field of `len` elements, which follow as `elem_*` calls.
    pub fn list(&mut self, id: i16, elem: Elem, len: usize) -> &mut Self {
        self.field(id, ty::LIST);
        if len < 15 {
            self.out.push(((len as u8) << 4) | elem.nibble());
        } else {
            self.out.push(0xF0 | elem.nibble());
            put_varint(self.out, len as u64);
        }
        self
    }

    /// Opens a struct element of a list; close it with [`end`](Self::end).
    pub fn elem_struct(&mut self) -> &mut Self {
        self.last_ids.push(0);
        self
    }

    /// An `i32` (or enum) list element.
    pub fn elem_i32(&mut self, v: i32) -> &mut Self {
        put_varint(self.out, zigzag(i64::from(v)));
        self
    }

    /// An `i64` list element.
    pub fn elem_i64(&mut self, v: i64) -> &mut Self {
        put_varint(self.out, zigzag(v));
        self
    }

    /// A `bool` list element.
    pub fn elem_bool(&mut self, v: bool) -> &mut Self {
        self.out.push(if v { ty::TRUE } else { ty::FALSE });
        self
    }

    /// A `binary` or `string` list element.
    pub fn elem_binary(&mut self, v: &[u8]) -> &mut Self {
        self.raw_binary(v);
        self
    }

    fn raw_binary(&mut self, v: &[u8]) {
        put_varint(self.out, v.len() as u64);
        self.out.extend_from_slice(v);
    }

    /// Closes the top-level struct.
    pub fn finish(mut self) {
        debug_assert_eq!(self.last_ids.len(), 1, "a struct was left open");
        self.out.push(0);
        self.last_ids.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xAC, 0x02]);
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
    }

    #[test]
    fn field_headers_use_deltas_and_long_form() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.i32(1, 3).i64(20, -2).bool(21, true).binary(22, b"ab");
        w.begin(23).i32(1, 1).end();
        w.list(24, Elem::I32, 2).elem_i32(1).elem_i32(2);
        w.finish();
        assert_eq!(
            out,
            [
                0x15, 0x06, // field 1 i32: 3
                0x06, 0x28, 0x03, // field 20 (delta 19: long form) i64: -2
                0x11, // field 21 bool true
                0x18, 0x02, b'a', b'b', // field 22 binary
                0x1C, 0x15, 0x02, 0x00, // field 23 struct { 1: i32 1 }
                0x19, 0x25, 0x02, 0x04, // field 24 list<i32> [1, 2]
                0x00,
            ]
        );
    }
}
