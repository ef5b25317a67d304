import PermafrostTensor

/// A node of a model: it owns named parameters and named child modules, and its parameter names
/// are exactly PyTorch's `state_dict` keys (`encoder.layers.0.linear1.weight`), so Hugging Face,
/// diffusers and PyTorch checkpoints load unchanged.
///
/// Subclasses create their parameters and children in `init` and ``register(_:_:)-(_,Parameter)``
/// them in PyTorch's order.
///
/// ```swift
/// let model = Sequential([Linear(784, 256, generator: &rng), ReLU(), Linear(256, 10, generator: &rng)])
/// try model.freeze(matching: "0.*")
/// model.trainableParameters().map(\.name)   // ["2.weight", "2.bias"]
/// ```
open class Module {
    private var ownParameters: [(name: String, parameter: Parameter)] = []
    private var children: [(name: String, module: Module)] = []
    /// Adapters merged into this tree's weights by ``mergeLowRankAdapters()``, so that
    /// ``unmergeLowRankAdapters()`` can take them out again.
    var mergedAdapters: [(module: String, adapter: LowRankAdapter)] = []
    /// Training mode (dropout active). Set for a whole tree with ``setTraining(_:)``.
    public private(set) var isTraining = true

    public init() {}

    /// Registers a parameter under `name` (a single path segment).
    public func register(_ name: String, _ parameter: Parameter) {
        precondition(!name.contains(".") && !name.isEmpty, "parameter name '\(name)' must be one non-empty path segment")
        precondition(!ownParameters.contains { $0.name == name }, "parameter '\(name)' registered twice")
        ownParameters.append((name, parameter))
    }

    /// Registers a child module under `name` (a single path segment).
    public func register(_ name: String, _ module: Module) {
        precondition(!name.contains(".") && !name.isEmpty, "module name '\(name)' must be one non-empty path segment")
        precondition(!children.contains { $0.name == name }, "module '\(name)' registered twice")
        children.append((name, module))
    }

    /// Removes the child module registered under `name` (an adapter being merged or dropped).
    func unregisterModule(_ name: String) {
        children.removeAll { $0.name == name }
    }

    /// The child module registered under `name` (a single path segment), or `nil`.
    func child(named name: String) -> Module? { children.first { $0.name == name }?.module }

    /// Every parameter with its full dotted name, depth first in registration order (PyTorch's order).
    public func namedParameters() -> [(name: String, parameter: Parameter)] {
        var result: [(String, Parameter)] = []
        var seen = Set<ObjectIdentifier>()
        collect(prefix: "", into: &result, seen: &seen)
        return result
    }

    private func collect(prefix: String, into result: inout [(String, Parameter)], seen: inout Set<ObjectIdentifier>) {
        for (name, parameter) in ownParameters where seen.insert(ObjectIdentifier(parameter)).inserted {
            result.append((prefix + name, parameter))
        }
        for (name, child) in children { child.collect(prefix: prefix + name + ".", into: &result, seen: &seen) }
    }

    /// Child modules with their dotted paths (this module is `""`).
    public func namedModules() -> [(name: String, module: Module)] {
        var result: [(String, Module)] = [("", self)]
        for (name, child) in children {
            result += child.namedModules().map { ($0.name.isEmpty ? name : name + "." + $0.name, $0.module) }
        }
        return result
    }

    /// Parameters that training may change.
    public func trainableParameters() -> [(name: String, parameter: Parameter)] {
        namedParameters().filter { !$0.parameter.isFrozen }
    }

    /// Parameters that training may not change.
    public func frozenParameters() -> [(name: String, parameter: Parameter)] {
        namedParameters().filter { $0.parameter.isFrozen }
    }

    /// The parameter named `name`, or `nil`.
    public func parameter(named name: String) -> Parameter? {
        namedParameters().first { $0.name == name }?.parameter
    }

    /// Sets training mode for this module and all descendants.
    public func setTraining(_ training: Bool) {
        isTraining = training
        for (_, child) in children { child.setTraining(training) }
    }

    /// Total number of scalars in all parameters.
    public var parameterCount: Int { namedParameters().reduce(0) { $0 + $1.parameter.value.count } }
}
