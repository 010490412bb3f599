"""The built-in unlearning methods, one module each (``influence`` holds gif, fif, pif, if and grad,
which share their arguments). Every module of this package registers its methods when imported;
the method registry imports this package the first time a method name is looked up, so a new
method is one new file here (see docs/development.md)."""
import importlib
import pkgutil

# influence first: gif is the default method and leads every list of them
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: (m.name != "influence", m.name)):
    importlib.import_module(f"{__name__}.{_info.name}")
