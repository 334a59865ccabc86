/*
 * tool_json.h - a tiny streaming JSON writer for the operator tools.
 *
 * The tools print one JSON object on stdout for --json. Values are written
 * as they are produced (an ls over a large spool never holds the whole
 * list), so the writer only remembers, per open container, whether it is
 * an array and whether it already has an item (for the commas).
 *
 * Strings are byte spans, not C strings: spool data (addresses, bodies) is
 * arbitrary bytes. Valid UTF-8 sequences pass through; every byte of an
 * invalid sequence is written as \u00XX (so a non-UTF-8 byte reads back as
 * the code point of the same value, never as an error); quote, backslash
 * and control characters are escaped (RFC 8259 section 7).
 *
 * Invariants: a key is given inside an object and never inside an array
 * or at the top; containers nest at most TOOL_JSON_DEPTH_MAX deep; the
 * writer borrows out and every string only until the call returns.
 */
#ifndef TOOL_JSON_H
#define TOOL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TOOL_JSON_DEPTH_MAX 16u

struct tool_json {
	FILE *out;
	uint32_t depth;
	bool is_array[TOOL_JSON_DEPTH_MAX];
	bool has_items[TOOL_JSON_DEPTH_MAX];
};

/* Start a document on out (borrowed for the writer's life). */
void tool_json_init(struct tool_json *json, FILE *out);
/* End the document: every container closed; writes the final newline. */
void tool_json_finish(struct tool_json *json);

/* Containers. key is NULL at the top and inside arrays, set in objects. */
void tool_json_object_begin(struct tool_json *json, const char *key);
void tool_json_object_end(struct tool_json *json);
void tool_json_array_begin(struct tool_json *json, const char *key);
void tool_json_array_end(struct tool_json *json);

/* Values; the same key rule. */
void tool_json_bytes(struct tool_json *json, const char *key, const uint8_t *data, size_t len);
/* A C string, or null when text is NULL. */
void tool_json_string(struct tool_json *json, const char *key, const char *text);
void tool_json_uint(struct tool_json *json, const char *key, uint64_t value);
void tool_json_double(struct tool_json *json, const char *key, double value);
void tool_json_bool(struct tool_json *json, const char *key, bool value);
void tool_json_null(struct tool_json *json, const char *key);

/* Write (data, len) to out as one quoted, escaped JSON string. */
void tool_json_write_string(FILE *out, const uint8_t *data, size_t len);

/*
 * Size of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), 1 to 4, or 0 if the bytes
 * at p do not start one. Reads at most len bytes; len must be > 0.
 */
size_t tool_utf8_sequence_size(const uint8_t *p, size_t len);

#endif /* TOOL_JSON_H */
