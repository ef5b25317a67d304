import PermafrostTensor

/// Adding, listing, merging and removing low-rank adapters on a model.
///
/// ```swift
/// try model.addLowRankAdapters(matching: ["down_blocks.*.attentions.*"], configuration: LoRAConfiguration(rank: 8))
/// model.trainableParameters().map(\.name)   // only "….to_q.lora_A.weight", "….to_q.lora_B.weight", …
/// ```
extension Module {
    /// Every adapted layer with its dotted module name, in module order.
    public func lowRankAdapters() -> [(module: String, adapter: LowRankAdapter)] {
        namedModules().compactMap { entry in
            (entry.module as? any LowRankAdaptable)?.adapter.map { (entry.name, $0) }
        }
    }

    /// The tensors of every adapter, named as in the model (`<module>.lora_A.weight`).
    public func lowRankAdapterParameters() -> [(name: String, parameter: Parameter)] {
        let adapterTensors = Set(lowRankAdapters().flatMap { [ObjectIdentifier($0.adapter.downWeight), ObjectIdentifier($0.adapter.upWeight)] })
        return namedParameters().filter { adapterTensors.contains(ObjectIdentifier($0.parameter)) }
    }

    /// The layers the globs select: every `Linear`, `Conv2d` and `MultiheadAttention` whose dotted
    /// module name matches one (FreezePlan's glob syntax); a selected attention module brings its
    /// `out_proj`. Each pattern must select something.
    public func lowRankTargets(matching patterns: [String]) throws(LoRAError) -> [String] {
        let modules = namedModules()
        let adaptable = modules.filter { $0.module is any LowRankAdaptable && !$0.name.isEmpty }.map(\.name)
        let attentions = Set(modules.filter { $0.module is MultiheadAttention }.map(\.name))
        var selected = Set(try LowRankTargets.select(patterns, among: adaptable))
        for attention in attentions where selected.contains(attention) { selected.insert(attention + ".out_proj") }
        // PEFT adapts an attention module's out_proj only together with its in-projection.
        if let lone = selected.first(where: { name in
            name.hasSuffix(".out_proj") && attentions.contains(String(name.dropLast(".out_proj".count))) && !selected.contains(String(name.dropLast(".out_proj".count)))
        }) {
            throw .unsupportedLayer(module: lone, reason: "an attention module's out_proj is adapted together with its in-projection: target '\(lone.dropLast(".out_proj".count))'")
        }
        return adaptable.filter { selected.contains($0) }
    }

    /// Adds a fresh adapter (B = 0, so outputs are unchanged) to every layer `patterns` select and
    /// freezes every other tensor, so only the adapters train.
    ///
    /// Refuses, changing nothing, a layer that already has an adapter, one that LoRA cannot adapt,
    /// and one whose adapted weight a publisher's guard freezes (an adapter would give back what the
    /// guard took away). Returns the adapted module names.
    @discardableResult
    public func addLowRankAdapters(matching patterns: [String], configuration: LoRAConfiguration, seed: UInt64 = 0) throws(LoRAError) -> [String] {
        try configuration.validate()
        let targets = try lowRankTargets(matching: patterns)
        let byName = Dictionary(namedModules().map { ($0.name, $0.module) }, uniquingKeysWith: { a, _ in a })
        var generator = PhiloxGenerator(seed: seed)
        var planned: [(any LowRankAdaptable, LowRankAdapter)] = []
        for name in targets {
            let layer = byName[name] as! any LowRankAdaptable
            guard layer.adapter == nil else { throw .alreadyAdapted(module: name) }
            try Self.refuseGuarded(layer, name: name)
            do { planned.append((layer, try layer.makeAdapter(configuration, generator: &generator))) } catch {
                if case let .unsupportedLayer(_, reason) = error { throw .unsupportedLayer(module: name, reason: reason) }
                throw error
            }
        }
        for (layer, adapter) in planned { layer.attach(adapter) }
        freezeAllButAdapters()
        return targets
    }

    /// Attaches adapters built elsewhere (a loaded PEFT folder) by module name, after the same checks
    /// as ``addLowRankAdapters(matching:configuration:seed:)``, and freezes every other tensor.
    public func attachLowRankAdapters(_ adapters: [(module: String, adapter: LowRankAdapter)]) throws(LoRAError) {
        let byName = Dictionary(namedModules().map { ($0.name, $0.module) }, uniquingKeysWith: { a, _ in a })
        let adaptable = namedModules().filter { $0.module is any LowRankAdaptable }.map(\.name)
        for (name, _) in adapters {
            guard let layer = byName[name] as? any LowRankAdaptable else {
                throw .unknownModule(name: name, closest: closestNames(to: name, among: adaptable))
            }
            guard layer.adapter == nil else { throw .alreadyAdapted(module: name) }
            try Self.refuseGuarded(layer, name: name)
        }
        for (name, adapter) in adapters { (byName[name] as! any LowRankAdaptable).attach(adapter) }
        freezeAllButAdapters()
    }

    /// Adds every adapter's ΔW to its layer's weight and removes the adapters; the model then computes
    /// what it computed with them. Refuses, merging nothing, when a guard freezes an adapted weight.
    @discardableResult
    public func mergeLowRankAdapters() throws(LoRAError) -> [String] {
        let adapted = lowRankAdapters()
        let byName = Dictionary(namedModules().map { ($0.name, $0.module) }, uniquingKeysWith: { a, _ in a })
        for (name, _) in adapted { try Self.refuseGuarded(byName[name] as! any LowRankAdaptable, name: name) }
        for (name, _) in adapted { (byName[name] as! any LowRankAdaptable).mergeAdapter() }
        mergedAdapters += adapted
        return adapted.map(\.module)
    }

    /// Takes the adapters ``mergeLowRankAdapters()`` merged back out of the weights (W − ΔW, each
    /// rounded once, as PEFT's unmerge does) and attaches them again. Refuses, changing nothing, when
    /// a guard now freezes one of those weights.
    @discardableResult
    public func unmergeLowRankAdapters() throws(LoRAError) -> [String] {
        let byName = Dictionary(namedModules().map { ($0.name, $0.module) }, uniquingKeysWith: { a, _ in a })
        for (name, _) in mergedAdapters {
            guard let layer = byName[name] as? any LowRankAdaptable else { throw .unknownModule(name: name, closest: []) }
            try Self.refuseGuarded(layer, name: name)
        }
        for (name, adapter) in mergedAdapters { (byName[name] as! any LowRankAdaptable).unmerge(adapter) }
        defer { mergedAdapters = [] }
        return mergedAdapters.map(\.module)
    }

    /// Removes every adapter; the base weights are untouched.
    public func removeLowRankAdapters() {
        for entry in namedModules() { (entry.module as? any LowRankAdaptable)?.attach(nil) }
    }

    private static func refuseGuarded(_ layer: any LowRankAdaptable, name: String) throws(LoRAError) {
        if let guarded = layer.adaptedWeights.first(where: { $0.parameter.isEnforced }) {
            throw .guardedTarget(module: name, tensor: name + "." + guarded.name)
        }
    }

    private func freezeAllButAdapters() {
        let adapterTensors = Set(lowRankAdapterParameters().map(\.name))
        for (name, parameter) in namedParameters() where !adapterTensors.contains(name) && !parameter.isFrozen {
            parameter.isFrozen = true
        }
    }
}

/// Glob selection of adaptable layers by name, for callers that hold names rather than a model (the
/// service validates a job's targets against its base's layer names).
public enum LowRankTargets {
    /// The names among `adaptable` that match one of `patterns` (FreezePlan's globs), in `adaptable`'s
    /// order; each pattern must match one.
    public static func select(_ patterns: [String], among adaptable: [String]) throws(LoRAError) -> [String] {
        var selected = Set<String>()
        for pattern in patterns {
            let matched = adaptable.filter { Glob.matches($0, pattern: pattern) }
            guard !matched.isEmpty else { throw .patternMatchedNothing(pattern: pattern, closest: closestNames(to: pattern, among: adaptable)) }
            selected.formUnion(matched)
        }
        return adaptable.filter { selected.contains($0) }
    }
}
