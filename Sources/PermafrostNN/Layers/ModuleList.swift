/// Child modules named `0`, `1`, … without a forward pass of their own (PyTorch's `nn.ModuleList`).
public final class ModuleList<Element: Module>: Module {
    public let modules: [Element]

    public init(_ modules: [Element]) {
        self.modules = modules
        super.init()
        for (index, module) in modules.enumerated() { register(String(index), module) }
    }

    public subscript(index: Int) -> Element { modules[index] }
    public var count: Int { modules.count }
}
