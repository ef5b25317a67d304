import PermafrostTensor

/// Freezing and unfreezing by exact name, glob pattern, module subtree or plan.
///
/// Every call validates all names before changing anything, so a failed call leaves the model as it was.
extension Module {
    private func resolve(_ names: [String]) throws(FreezeError) -> [Parameter] {
        let all = namedParameters()
        let byName = Dictionary(all.map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        var result: [Parameter] = []
        for name in names {
            guard let parameter = byName[name] else {
                throw .unknownTensor(name: name, closest: closestNames(to: name, among: all.map(\.name)))
            }
            result.append(parameter)
        }
        return result
    }

    /// Freezes the tensors with these exact names.
    public func freeze(names: [String]) throws(FreezeError) {
        for parameter in try resolve(names) { parameter.isFrozen = true }
    }

    /// Unfreezes the tensors with these exact names; refuses tensors frozen by an enforced plan.
    public func unfreeze(names: [String]) throws(FreezeError) {
        let parameters = try resolve(names)
        for (name, parameter) in zip(names, parameters) where parameter.isEnforced { throw .enforcedTensor(name: name) }
        for parameter in parameters { parameter.isFrozen = false }
    }

    /// Freezes every tensor matching a glob (`down_blocks.*.resnets.*`); returns the names frozen.
    @discardableResult
    public func freeze(matching pattern: String) throws(FreezeError) -> [String] {
        let names = try FreezePlan.matching([pattern], in: self).frozen.sorted()
        try freeze(names: names)
        return names
    }

    /// Unfreezes every tensor matching a glob; refuses if any of them is enforced.
    @discardableResult
    public func unfreeze(matching pattern: String) throws(FreezeError) -> [String] {
        let names = try FreezePlan.matching([pattern], in: self).frozen.sorted()
        try unfreeze(names: names)
        return names
    }

    /// Freezes every tensor under the module at dotted `path` (`""` is the whole model).
    public func freeze(subtree path: String) throws(FreezeError) {
        try freeze(names: try names(inSubtree: path))
    }

    /// Unfreezes every tensor under the module at dotted `path`.
    public func unfreeze(subtree path: String) throws(FreezeError) {
        try unfreeze(names: try names(inSubtree: path))
    }

    private func names(inSubtree path: String) throws(FreezeError) -> [String] {
        let modules = namedModules()
        guard modules.contains(where: { $0.name == path }) else {
            throw .unknownModule(path: path, closest: closestNames(to: path, among: modules.map(\.name).filter { !$0.isEmpty }))
        }
        let prefix = path.isEmpty ? "" : path + "."
        return namedParameters().map(\.name).filter { $0.hasPrefix(prefix) }
    }

    /// Adds `plan`'s frozen tensors and rows to the model. Names the model lacks are an error that
    /// lists the closest names. An enforced plan marks its tensors so they can never be unfrozen.
    public func apply(_ plan: FreezePlan) throws(FreezeError) {
        let whole = try resolve(plan.frozen.sorted())
        let rowNames = plan.frozenRows.keys.sorted()
        let rowTargets = try resolve(rowNames)
        for (name, parameter) in zip(rowNames, rowTargets) {
            let rows = parameter.shape.first ?? 0
            for range in plan.frozenRows[name] ?? [] where range.lower < 0 || range.upper > rows || range.lower > range.upper {
                throw .invalidRowRange(name: name, range: range.lower..<Swift.max(range.lower, range.upper), rows: rows)
            }
        }
        for parameter in whole {
            parameter.isFrozen = true
            if plan.isEnforced { parameter.isEnforced = true }
        }
        for (name, parameter) in zip(rowNames, rowTargets) {
            parameter.frozenRows += (plan.frozenRows[name] ?? []).map(\.range)
        }
    }

    /// Unfreezes everything that is not enforced, then applies `plan`: the way to switch plans
    /// (a dynamic freezer's step) without ever loosening a publisher's guard.
    public func replaceFreezing(with plan: FreezePlan) throws(FreezeError) {
        _ = try resolve(plan.frozen.sorted())
        _ = try resolve(plan.frozenRows.keys.sorted())
        for (_, parameter) in namedParameters() where !parameter.isEnforced {
            parameter.isFrozen = false
            parameter.frozenRows = []
        }
        try apply(plan)
    }

    /// The plan that describes the model's current freezing (enforced when any tensor is enforced).
    public var freezePlan: FreezePlan {
        let all = namedParameters()
        var rows: [String: [Range<Int>]] = [:]
        for (name, parameter) in all where !parameter.frozenRows.isEmpty { rows[name] = parameter.frozenRows }
        return FreezePlan(frozen: Set(all.filter { $0.parameter.isFrozen }.map(\.name)), frozenRows: rows,
                          isEnforced: all.contains { $0.parameter.isEnforced })
    }
}
