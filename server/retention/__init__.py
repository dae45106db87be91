"""How long the records of a released device are kept: retain_until per device from its product family's rule."""
