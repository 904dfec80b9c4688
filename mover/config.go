package mover

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

// Engine names an engine. It implements flag.Value, so that a command can
// offer --mover with flag.Var(&cfg.Engine, "mover", mover.EngineUsage).
type Engine string

const (
	// EngineUnset lets New read RPSTREAM_MOVER, and use EngineAuto if that
	// is unset too.
	EngineUnset Engine = ""
	// EngineSync runs every operation inside Submit.
	EngineSync Engine = "sync"
	// EngineCPU runs operations on a pool of worker goroutines.
	EngineCPU Engine = "cpu"
	// EngineDSA offloads operations to an Intel DSA work queue; New fails
	// with ErrNoDevice if none is usable.
	EngineDSA Engine = "dsa"
	// EngineAuto is EngineDSA where a usable work queue exists, else
	// EngineCPU.
	EngineAuto Engine = "auto"
)

// EnvVar is the environment variable New reads when Config.Engine is
// EngineUnset.
const EnvVar = "RPSTREAM_MOVER"

// EngineUsage is the help text for a --mover flag.
const EngineUsage = "data mover engine: sync, cpu, dsa or auto (default: $" + EnvVar + ", else auto)"

// ParseEngine parses "sync", "cpu", "dsa" or "auto" (any case, spaces
// trimmed). Anything else gives ErrUnknownEngine.
func ParseEngine(s string) (Engine, error) {
	switch e := Engine(strings.ToLower(strings.TrimSpace(s))); e {
	case EngineSync, EngineCPU, EngineDSA, EngineAuto:
		return e, nil
	}
	return EngineUnset, fmt.Errorf("%w %q (want sync, cpu, dsa or auto)", ErrUnknownEngine, s)
}

// String returns the engine's name ("" when unset).
func (e *Engine) String() string { return string(*e) }

// Set parses s with ParseEngine (flag.Value).
func (e *Engine) Set(s string) error {
	v, err := ParseEngine(s)
	if err != nil {
		return err
	}
	*e = v
	return nil
}

// Config configures New. Start from DefaultConfig; New copies it and fills
// zero fields with defaults before validating.
type Config struct {
	// Engine to use; EngineUnset reads RPSTREAM_MOVER, else EngineAuto.
	Engine Engine
	// Workers is the number of cpu-engine worker goroutines (default:
	// GOMAXPROCS-1, at least 1, at most 8: the submitting goroutine works
	// too).
	Workers int
	// QueueDepth is how many requests may wait for a cpu worker (default
	// 256). It bounds the queue only with InlineBelow < 0, where Submit
	// waits for room until ctx ends; otherwise the caller runs a request
	// itself as soon as each awake worker has one waiting.
	QueueDepth int
	// InlineBelow is the size below which the cpu engine runs a request in
	// Submit instead of handing it to a worker. 0 measures the crossover
	// once per process at the first New (a few milliseconds: a durable
	// copy of 64 KiB, 256 KiB and 1 MiB inline and shared out with a
	// worker; the smallest size where sharing wins by 10%, else never); a
	// negative value never inlines, and Submit then waits for queue room
	// until ctx ends.
	InlineBelow int
	// DSA configures the dsa engine.
	DSA DSAConfig
}

// DefaultConfig returns the configuration New uses for zero fields.
func DefaultConfig() Config {
	// The caller's goroutine works too (caller-runs), so one core is left
	// to it.
	w := min(max(runtime.GOMAXPROCS(0)-1, 1), 8)
	return Config{
		Workers:    w,
		QueueDepth: 256,
		DSA:        defaultDSAConfig(),
	}
}

// Validate reports whether c is usable, after defaults are filled in.
func (c *Config) Validate() error {
	if c.Engine != EngineUnset {
		if _, err := ParseEngine(string(c.Engine)); err != nil {
			return err
		}
	}
	if c.Workers < 1 || c.Workers > 1024 {
		return fmt.Errorf("%w: config: Workers %d not in [1, 1024]", ErrInvalid, c.Workers)
	}
	if c.QueueDepth < 1 || c.QueueDepth > 1<<20 {
		return fmt.Errorf("%w: config: QueueDepth %d not in [1, 2^20]", ErrInvalid, c.QueueDepth)
	}
	return c.DSA.validate()
}

func (c *Config) fillDefaults() {
	d := DefaultConfig()
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.QueueDepth == 0 {
		c.QueueDepth = d.QueueDepth
	}
	c.DSA.fillDefaults()
}

// New starts the engine cfg selects. Its Describe says which engine it is
// and why it was chosen. Requesting dsa where no usable work queue exists
// fails with an error wrapping ErrNoDevice that names what is missing; auto
// then falls back to cpu and says why in Describe.
func New(cfg Config) (Mover, error) {
	c := cfg
	c.fillDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	eng, src := c.Engine, "requested by Config.Engine"
	if eng == EngineUnset {
		eng, src = EngineAuto, "default (auto; "+EnvVar+" unset)"
		if v, ok := os.LookupEnv(EnvVar); ok && strings.TrimSpace(v) != "" {
			e, err := ParseEngine(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", EnvVar, err)
			}
			eng, src = e, "requested by "+EnvVar+"="+v
		}
	}
	switch eng {
	case EngineSync:
		return newSync(src), nil
	case EngineCPU:
		return newCPU(&c, src), nil
	case EngineDSA:
		m, err := openDSA(&c, src)
		if err != nil {
			return nil, fmt.Errorf("mover: dsa engine %s: %w", src, err)
		}
		return m, nil
	}
	m, err := openDSA(&c, "chosen by auto: a usable work queue exists")
	if err == nil {
		return m, nil
	}
	return newCPU(&c, "chosen by auto ("+src+") because "+err.Error()), nil
}
