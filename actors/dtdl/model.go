package dtdl

// Interface is a parsed DTDL interface. It is immutable after Parse (and
// Link) and safe for concurrent use. Its JSON form is the resolved view the
// dashboard reads: schemas inline, names, units and semantic types.
type Interface struct {
	ID          string       `json:"id"`
	DisplayName string       `json:"displayName,omitempty"`
	Description string       `json:"description,omitempty"`
	Telemetry   []*Telemetry `json:"telemetry"`
	Properties  []*Property  `json:"properties"`
	Commands    []*Command   `json:"commands"`
	Components  []*Component `json:"components"`

	telemetry  map[string]*Telemetry
	properties map[string]*Property
	commands   map[string]*Command
	components map[string]*Component
}

// Telemetry is a Telemetry content.
type Telemetry struct {
	Name          string   `json:"name"`
	DisplayName   string   `json:"displayName,omitempty"`
	Description   string   `json:"description,omitempty"`
	SemanticTypes []string `json:"semanticTypes,omitempty"`
	Unit          string   `json:"unit,omitempty"`
	Schema        *Schema  `json:"schema"`
}

// Property is a Property content; only writable properties may be desired.
type Property struct {
	Name          string   `json:"name"`
	DisplayName   string   `json:"displayName,omitempty"`
	Description   string   `json:"description,omitempty"`
	SemanticTypes []string `json:"semanticTypes,omitempty"`
	Unit          string   `json:"unit,omitempty"`
	Writable      bool     `json:"writable"`
	Schema        *Schema  `json:"schema"`
}

// Command is a Command content. Request and Response are nil when the
// command takes or returns nothing.
type Command struct {
	Name        string          `json:"name"`
	DisplayName string          `json:"displayName,omitempty"`
	Description string          `json:"description,omitempty"`
	Request     *CommandPayload `json:"request,omitempty"`
	Response    *CommandPayload `json:"response,omitempty"`
}

// CommandPayload is a command's request or response.
type CommandPayload struct {
	Name          string   `json:"name"`
	DisplayName   string   `json:"displayName,omitempty"`
	Description   string   `json:"description,omitempty"`
	SemanticTypes []string `json:"semanticTypes,omitempty"`
	Unit          string   `json:"unit,omitempty"`
	Nullable      bool     `json:"nullable,omitempty"`
	Schema        *Schema  `json:"schema"`
}

// Component is a Component content: a named instance of another interface.
// Interface is the interface it names, inline in the document or set by
// Link; nil when that interface is not known.
type Component struct {
	Name        string     `json:"name"`
	DisplayName string     `json:"displayName,omitempty"`
	Description string     `json:"description,omitempty"`
	SchemaID    string     `json:"schemaId"`
	Interface   *Interface `json:"interface,omitempty"`

	inline bool // Interface was declared in the document
}

// Kind is a schema's kind: a primitive or one of the complex schemas.
type Kind string

// The schema kinds. Primitive kinds are the DTDL names.
const (
	Boolean         Kind = "boolean"
	Byte            Kind = "byte"
	Bytes           Kind = "bytes"
	Date            Kind = "date"
	DateTime        Kind = "dateTime"
	Decimal         Kind = "decimal"
	Double          Kind = "double"
	Duration        Kind = "duration"
	Float           Kind = "float"
	Integer         Kind = "integer"
	Long            Kind = "long"
	Short           Kind = "short"
	String          Kind = "string"
	Time            Kind = "time"
	UnsignedByte    Kind = "unsignedByte"
	UnsignedInteger Kind = "unsignedInteger"
	UnsignedLong    Kind = "unsignedLong"
	UnsignedShort   Kind = "unsignedShort"
	UUID            Kind = "uuid"
	Object          Kind = "Object"
	Enum            Kind = "Enum"
	Array           Kind = "Array"
	Map             Kind = "Map"
)

var primitives = map[string]Kind{}

func init() {
	for _, k := range []Kind{Boolean, Byte, Bytes, Date, DateTime, Decimal, Double, Duration, Float, Integer,
		Long, Short, String, Time, UnsignedByte, UnsignedInteger, UnsignedLong, UnsignedShort, UUID} {
		primitives[string(k)] = k
	}
}

// geospatial are the DTDL geospatial schemas, refused by name.
var geospatial = map[string]bool{"point": true, "lineString": true, "polygon": true,
	"multiPoint": true, "multiLineString": true, "multiPolygon": true}

// Schema is a resolved schema. Only the members of its Kind are set.
type Schema struct {
	Kind        Kind   `json:"kind"`
	ID          string `json:"id,omitempty"`
	DisplayName string `json:"displayName,omitempty"`
	// Object
	Fields []*Field `json:"fields,omitempty"`
	// Enum
	ValueSchema Kind        `json:"valueSchema,omitempty"` // integer or string
	EnumValues  []EnumValue `json:"enumValues,omitempty"`
	// Array
	ElementSchema *Schema `json:"elementSchema,omitempty"`
	// Map
	MapKey   *Field `json:"mapKey,omitempty"`
	MapValue *Field `json:"mapValue,omitempty"`

	fields map[string]*Field
}

// Field is a field of an Object, or a Map's key or value.
type Field struct {
	Name          string   `json:"name"`
	DisplayName   string   `json:"displayName,omitempty"`
	Description   string   `json:"description,omitempty"`
	SemanticTypes []string `json:"semanticTypes,omitempty"`
	Unit          string   `json:"unit,omitempty"`
	Schema        *Schema  `json:"schema"`
}

// EnumValue is one value of an Enum: Value is a string or an int64.
type EnumValue struct {
	Name        string `json:"name"`
	DisplayName string `json:"displayName,omitempty"`
	Value       any    `json:"enumValue"`
}

// TelemetryNamed returns the telemetry of that name, or nil.
func (i *Interface) TelemetryNamed(name string) *Telemetry { return i.telemetry[name] }

// PropertyNamed returns the property of that name, or nil.
func (i *Interface) PropertyNamed(name string) *Property { return i.properties[name] }

// CommandNamed returns the command of that name, or nil.
func (i *Interface) CommandNamed(name string) *Command { return i.commands[name] }

// ComponentNamed returns the component of that name, or nil.
func (i *Interface) ComponentNamed(name string) *Component { return i.components[name] }

// ComponentIDs lists the DTMIs of the interfaces the components name, in
// document order, once each.
func (i *Interface) ComponentIDs() []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range i.Components {
		if !seen[c.SchemaID] {
			seen[c.SchemaID] = true
			out = append(out, c.SchemaID)
		}
	}
	return out
}

// Link sets the interface of every component that names one by DTMI,
// asking lookup; a component whose interface lookup does not know stays
// unlinked, and data addressed to it is refused. Link must be called before
// the Interface is shared: it is the one mutation after Parse.
func (i *Interface) Link(lookup func(dtmi string) *Interface) {
	for _, c := range i.Components {
		if !c.inline {
			c.Interface = lookup(c.SchemaID)
		}
	}
}
