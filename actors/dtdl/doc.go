// Package dtdl parses DTDL v3 interfaces (the Digital Twins Definition
// Language of Azure Digital Twins and IoT Plug and Play) and validates
// device data against them: telemetry payloads, reported and desired
// property patches, and command requests (CONTRACT section 12).
//
// It is pure: no IO, no goroutines, no clock. [Parse] turns one interface
// document into an immutable [*Interface], shared by every message of every
// device of that model; the caller (the model registry of the actor layer)
// stores documents and links components to the interfaces they name
// ([Interface.Link]).
//
// # What is supported
//
// Interface with contents Telemetry, Property (writable or not), Command
// (request and response) and Component; the interface-level "schemas"
// array; primitive schemas boolean, byte, bytes, date, dateTime, decimal,
// double, duration, float, integer, long, short, string, time,
// unsignedByte, unsignedInteger, unsignedLong, unsignedShort, uuid; complex
// schemas Object, Enum, Array and Map, inline or by DTMI. Semantic types
// (extra @type values such as "Temperature") and units are kept for
// display, not checked against each other. Both dtmi:dtdl:context;3 and
// dtmi:dtdl:context;2 documents are read, with the quantitativeTypes
// extension.
//
// # What is refused, by name
//
// Relationship, extends, the geospatial schemas (point, lineString, …),
// and every context extension other than quantitativeTypes (historization,
// annotation, overriding, mqtt, …). A member the language does not define
// for a class is an error that names it: a typo must not silently turn a
// constraint off.
//
// # Errors
//
// Parse errors wrap [ErrInvalid] or [ErrUnsupported] and are a *[Error]
// whose Path is a JSON path into the document ("$.contents[2].schema").
// Validation errors wrap [ErrMismatch], with a path into the payload
// ("$.temperature") and what was expected.
//
// # IoT Plug and Play conventions
//
// A component's properties travel under the component's name, marked
// {"__t":"c"}; a writable property's reported value may be the
// acknowledgement {"value":…,"ac":200,"av":3,"ad":"…"}; a component's
// command is named "component*command".
package dtdl
