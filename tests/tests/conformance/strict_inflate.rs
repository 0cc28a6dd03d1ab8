//! A deflate decoder (RFC 1951) as strict as the standard: it refuses a copy from further back
//! than the window the server announced, or than the bytes it has produced.
//!
//! Why our own: zlib-rs always keeps a 32 KiB window whatever it is told, and C zlib (what
//! browsers run) only checks a copy against the bytes before the current call's output, so
//! neither catches a server that reaches a little past `server_max_window_bits`. This one is
//! slow and small (puff.c's method: canonical codes decoded a bit at a time).

/// One client's inflater, its window kept between messages.
pub struct StrictInflater {
    window: usize,
    /// Everything produced so far (tests read a few hundred messages).
    history: Vec<u8>,
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    bit: u32,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, String> {
        let byte = *self.data.get(self.pos).ok_or("ran out of input")?;
        let b = (u32::from(byte) >> self.bit) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.pos += 1;
        }
        Ok(b)
    }

    fn bits(&mut self, n: u32) -> Result<u32, String> {
        let mut v = 0;
        for i in 0..n {
            v |= self.bit()? << i;
        }
        Ok(v)
    }

    fn align(&mut self) {
        if self.bit != 0 {
            self.bit = 0;
            self.pos += 1;
        }
    }
}

/// A canonical Huffman code: how many codes of each length, and the symbols in code order.
struct Code {
    count: [u16; 16],
    symbol: Vec<u16>,
}

impl Code {
    fn new(lengths: &[u8]) -> Result<Self, String> {
        let mut count = [0u16; 16];
        for &l in lengths {
            count[usize::from(l)] += 1;
        }
        let mut left = 1i32;
        for &c in &count[1..] {
            left = left * 2 - i32::from(c);
            if left < 0 {
                return Err("an over-subscribed code".into());
            }
        }
        let mut offs = [0u16; 16];
        for l in 1..15 {
            offs[l + 1] = offs[l] + count[l];
        }
        let mut symbol = vec![0u16; lengths.len()];
        for (s, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbol[usize::from(offs[usize::from(l)])] = s as u16;
                offs[usize::from(l)] += 1;
            }
        }
        count[0] = 0;
        Ok(Self { count, symbol })
    }

    fn decode(&self, bits: &mut Bits) -> Result<u16, String> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.bit()? as i32;
            let count = i32::from(self.count[len]);
            if code - count < first {
                return Ok(self.symbol[(index + (code - first)) as usize]);
            }
            index += count;
            first += count;
            first <<= 1;
            code <<= 1;
        }
        Err("an invalid Huffman code".into())
    }
}

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u32; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u32; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

impl StrictInflater {
    pub fn new(window_bits: u8) -> Self {
        Self {
            window: 1 << window_bits,
            history: Vec::new(),
        }
    }

    /// Inflates one message's payload (RFC 7692 7.2.2: the stripped `00 00 ff ff` goes back).
    pub fn message(&mut self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let start = self.history.len();
        let mut bits = Bits {
            data: &input,
            pos: 0,
            bit: 0,
        };
        while bits.pos < input.len() {
            let last = bits.bit()? == 1;
            match bits.bits(2)? {
                0 => self.stored(&mut bits)?,
                1 => {
                    let (lit, dist) = fixed();
                    self.codes(&mut bits, &lit, &dist)?
                }
                2 => {
                    let (lit, dist) = dynamic(&mut bits)?;
                    self.codes(&mut bits, &lit, &dist)?
                }
                _ => return Err("block type 3".into()),
            }
            if last {
                break;
            }
        }
        Ok(self.history[start..].to_vec())
    }

    fn stored(&mut self, bits: &mut Bits) -> Result<(), String> {
        bits.align();
        let at = bits.pos;
        let head = bits.data.get(at..at + 4).ok_or("a cut stored block")?;
        let len = u16::from_le_bytes([head[0], head[1]]);
        if len != !u16::from_le_bytes([head[2], head[3]]) {
            return Err("a stored block's length and its complement differ".into());
        }
        let body = bits
            .data
            .get(at + 4..at + 4 + usize::from(len))
            .ok_or("a cut stored block")?;
        self.history.extend_from_slice(body);
        bits.pos = at + 4 + usize::from(len);
        Ok(())
    }

    fn codes(&mut self, bits: &mut Bits, lit: &Code, dist: &Code) -> Result<(), String> {
        loop {
            let sym = lit.decode(bits)?;
            match sym {
                0..=255 => self.history.push(sym as u8),
                256 => return Ok(()),
                257..=285 => {
                    let i = usize::from(sym - 257);
                    let len = usize::from(LEN_BASE[i]) + bits.bits(LEN_EXTRA[i])? as usize;
                    let d = usize::from(dist.decode(bits)?);
                    if d >= 30 {
                        return Err(format!("distance code {d}"));
                    }
                    let back = (DIST_BASE[d] + bits.bits(DIST_EXTRA[d])?) as usize;
                    if back > self.window {
                        return Err(format!(
                            "a copy from {back} bytes back, past the {}-byte window",
                            self.window
                        ));
                    }
                    if back > self.history.len() {
                        return Err(format!("a copy from before the first byte ({back} back)"));
                    }
                    for _ in 0..len {
                        let b = self.history[self.history.len() - back];
                        self.history.push(b);
                    }
                }
                _ => return Err(format!("literal/length symbol {sym}")),
            }
        }
    }
}

fn fixed() -> (Code, Code) {
    let mut lengths = [0u8; 288];
    for (s, l) in lengths.iter_mut().enumerate() {
        *l = match s {
            0..=143 => 8,
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
    }
    let lit = Code::new(&lengths).unwrap_or_else(|e| unreachable!("{e}"));
    let dist = Code::new(&[5u8; 30]).unwrap_or_else(|e| unreachable!("{e}"));
    (lit, dist)
}

fn dynamic(bits: &mut Bits) -> Result<(Code, Code), String> {
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let nlen = bits.bits(5)? as usize + 257;
    let ndist = bits.bits(5)? as usize + 1;
    let ncode = bits.bits(4)? as usize + 4;
    if nlen > 286 || ndist > 30 {
        return Err("too many codes".into());
    }
    let mut cl = [0u8; 19];
    for &o in &ORDER[..ncode] {
        cl[o] = bits.bits(3)? as u8;
    }
    let lencode = Code::new(&cl)?;
    let mut lengths = vec![0u8; nlen + ndist];
    let mut i = 0;
    while i < nlen + ndist {
        let sym = lencode.decode(bits)?;
        let (value, repeat) = match sym {
            0..=15 => (sym as u8, 1),
            16 => (
                *lengths[..i].last().ok_or("a repeat with nothing before")?,
                3 + bits.bits(2)? as usize,
            ),
            17 => (0, 3 + bits.bits(3)? as usize),
            _ => (0, 11 + bits.bits(7)? as usize),
        };
        if i + repeat > nlen + ndist {
            return Err("code lengths overrun".into());
        }
        lengths[i..i + repeat].fill(value);
        i += repeat;
    }
    if lengths[256] == 0 {
        return Err("no end-of-block code".into());
    }
    Ok((Code::new(&lengths[..nlen])?, Code::new(&lengths[nlen..])?))
}
