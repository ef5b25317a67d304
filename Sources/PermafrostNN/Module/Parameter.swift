import PermafrostTensor

/// A named, trainable-or-frozen tensor owned by a ``Module``.
///
/// A parameter is a reference: layers read `value` in their forward pass, optimizers write it, and
/// a gradient computation temporarily swaps in a trainable leaf. Freezing is a property of the
/// parameter, so every path (gradients, optimizer state, checkpoints) sees the same answer.
public final class Parameter {
    /// The current value. Writing it replaces the tensor (shape may change only through loading).
    public var value: Tensor
    /// Whether training may change this tensor.
    public internal(set) var isFrozen = false
    /// Frozen by an enforced plan (a publisher's guard): no later plan or call can unfreeze it.
    public internal(set) var isEnforced = false
    /// Row ranges (along axis 0) frozen while the rest of the tensor trains, e.g. all embedding rows
    /// except newly added tokens. Optimizers leave these rows bit-identical.
    public internal(set) var frozenRows: [Range<Int>] = []

    public init(_ value: Tensor) {
        self.value = value.detached()
    }

    public var shape: [Int] { value.shape }
    public var isTrainable: Bool { !isFrozen }

    /// Rows of axis 0 that may change (all of them when no row range is frozen).
    func trainableRowMask() -> [Bool]? {
        guard !frozenRows.isEmpty, let rows = value.shape.first else { return nil }
        var mask = [Bool](repeating: true, count: rows)
        for range in frozenRows { for row in range.clamped(to: 0..<rows) { mask[row] = false } }
        return mask
    }
}
