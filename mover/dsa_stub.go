package mover

type DSAConfig struct{ SysfsRoot, DevRoot string }

func defaultDSAConfig() DSAConfig                  { return DSAConfig{} }
func (c *DSAConfig) validate() error               { return nil }
func (c *DSAConfig) fillDefaults()                 {}
func openDSA(c *Config, why string) (Mover, error) { return nil, ErrNoDevice }
