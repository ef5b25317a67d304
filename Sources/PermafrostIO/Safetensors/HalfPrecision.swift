/// IEEE binary16 and bfloat16 conversions, round-to-nearest-even, bit-exact with NumPy and PyTorch
/// (written out so they behave the same on every platform, including those without `Float16`).
enum HalfPrecision {
    static func float(fromHalf bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = UInt32(bits >> 10) & 0x1F
        let mantissa = UInt32(bits) & 0x3FF
        if exponent == 0 {
            if mantissa == 0 { return Float(bitPattern: sign) }
            // Subnormal half: value = mantissa · 2⁻²⁴, exact in Float.
            let magnitude = Float(mantissa) * Float(bitPattern: 0x3380_0000) // 2^-24
            return sign == 0 ? magnitude : -magnitude
        }
        if exponent == 0x1F {
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }

    static func halfBits(from value: Float) -> UInt16 {
        let f = value.bitPattern
        let sign = UInt16((f >> 16) & 0x8000)
        let fExponent = f & 0x7F80_0000
        var fSignificand = f & 0x007F_FFFF
        if fExponent >= 0x4780_0000 {
            if fExponent == 0x7F80_0000 && fSignificand != 0 {
                var nan = UInt16(0x7C00 + (fSignificand >> 13))
                if nan == 0x7C00 { nan += 1 }
                return sign | nan
            }
            return sign | 0x7C00
        }
        if fExponent <= 0x3800_0000 {
            if fExponent < 0x3300_0000 { return sign }
            let exponent = fExponent >> 23
            fSignificand = 0x0080_0000 + (f & 0x007F_FFFF)
            fSignificand >>= (113 - exponent)
            if (fSignificand & 0x3FFF) != 0x1000 || (f & 0x7FF) != 0 { fSignificand += 0x1000 }
            return sign + UInt16(fSignificand >> 13)
        }
        let halfExponent = UInt16((fExponent - 0x3800_0000) >> 13)
        if (fSignificand & 0x3FFF) != 0x1000 { fSignificand += 0x1000 }
        return sign + UInt16(truncatingIfNeeded: (fSignificand >> 13)) + halfExponent
    }

    static func float(fromBFloat bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    static func bfloatBits(from value: Float) -> UInt16 {
        if value.isNaN { return 0x7FC0 | UInt16((value.bitPattern >> 16) & 0x8000) }
        let bits = value.bitPattern
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }
}
