"""Value types that flow along links, and the rule for which may connect.

The engine defines the primitive and core types (`T`); a node package defines its own
`LinkType`s and registers them from its `register()` (`Registry.add_link_type`)."""

from __future__ import annotations

from collections.abc import Iterable

UNKNOWN_COLOUR = "#cccccc"


class LinkType(str):
    """A link type. It is equal to (and hashes as) its name, so specs, files and the
    editor may use either; it carries its own connect rules and editor colour."""

    colour: str
    feeds: frozenset[str]
    accepts: frozenset[str]
    description: str

    def __new__(cls, name: str, *, colour: str = UNKNOWN_COLOUR, feeds: Iterable[str] = (),
                accepts: Iterable[str] = (), description: str = "") -> LinkType:
        if not name or not name.replace("_", "").isalnum() or name.upper() != name:
            raise ValueError(f"link type name {name!r}: use upper-case letters, digits and _")
        self = super().__new__(cls, name)
        self.colour = colour
        self.feeds = frozenset(feeds)  # other types an output of this type may feed
        self.accepts = frozenset(accepts)  # other types an input of this type takes
        self.description = description
        return self

    @property
    def value(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"LinkType({str(self)!r})"

    def same_rules(self, other: LinkType) -> bool:
        return (self.colour, self.feeds, self.accepts) == (other.colour, other.feeds,
                                                           other.accepts)


class T:
    """The core link types. (An INT fits a FLOAT or a SEED input, a SEED is an INT, and a
    STRING may feed a CHOICE, checked against the choices when the value is known.)"""

    image = LinkType("IMAGE", colour="#64b5f6")
    mask = LinkType("MASK", colour="#81c784")
    latent = LinkType("LATENT", colour="#ff8a80")
    conditioning = LinkType("CONDITIONING", colour="#ffb74d")
    model = LinkType("MODEL", colour="#b39ddb")
    clip = LinkType("CLIP", colour="#fff176")
    vae = LinkType("VAE", colour="#f06292")
    sampler = LinkType("SAMPLER", colour="#ecd19a", description="a sampling method")
    sigmas = LinkType("SIGMAS", colour="#cdffcd", description="an explicit noise schedule")
    guider = LinkType("GUIDER", colour="#66ffff",
                      description="a model with the conditionings that guide it")
    noise = LinkType("NOISE", colour="#b0b0b0", description="the starting noise, or none")
    int = LinkType("INT", colour="#90a4ae", feeds=("FLOAT", "SEED"))
    float = LinkType("FLOAT", colour="#90a4ae")
    string = LinkType("STRING", colour="#aed581", feeds=("CHOICE",))
    bool = LinkType("BOOL", colour="#90a4ae")
    choice = LinkType("CHOICE", colour="#90a4ae")
    seed = LinkType("SEED", colour="#90a4ae", feeds=("INT",))


CORE_TYPES: tuple[LinkType, ...] = tuple(v for v in vars(T).values() if isinstance(v, LinkType))
PRIMITIVES = frozenset({T.int, T.float, T.string, T.bool, T.choice, T.seed})

# Every type registered in this process, by name: so a bare name (a file's, the editor's)
# finds its rules. Registries add to it (`define`); a clash of rules is refused there.
_KNOWN: dict[str, LinkType] = {t: t for t in CORE_TYPES}


def define(t: LinkType) -> LinkType:
    """Make a type known by name; the same name with other rules is an error."""
    if not isinstance(t, LinkType):
        raise TypeError(f"{t!r} is not a LinkType")
    old = _KNOWN.setdefault(str(t), t)
    if old is not t and not old.same_rules(t):
        raise ValueError(f"link type {t} is already defined with other rules")
    return old


def link_type(t: LinkType | str) -> LinkType:
    """The type itself for a type or a registered name."""
    if isinstance(t, LinkType):
        return t
    try:
        return _KNOWN[t]
    except KeyError:
        raise ValueError(f"unknown link type {t!r}") from None


def can_connect(out_type: LinkType | str, in_type: LinkType | str) -> bool:
    """True when an output of `out_type` may feed an input of `in_type`."""
    if out_type == in_type:
        return True
    a = out_type if isinstance(out_type, LinkType) else _KNOWN.get(out_type)
    b = in_type if isinstance(in_type, LinkType) else _KNOWN.get(in_type)
    return (a is not None and in_type in a.feeds) or (b is not None and out_type in b.accepts)
