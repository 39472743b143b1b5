/* openapi: OpenAPI 3.x / Swagger 2.0 documents with x-wso2-* extensions -> API model. */
#ifndef MGW_OPENAPI_H
#define MGW_OPENAPI_H

#include <stddef.h>
#include "config.h"
#include "endpoint.h"

enum http_method {
	M_GET = 0, M_HEAD, M_POST, M_PUT, M_DELETE, M_PATCH, M_OPTIONS, M_TRACE,
	M__COUNT
};
const char *method_name(enum http_method m);
int method_from_name(const char *name, size_t len);	/* -1 if unknown; case-insensitive for YAML keys */

struct api_resource {
	char *path;				/* template as written: "/pet/{petId}" */
	unsigned methods;			/* bit (1u << enum http_method) */
	struct ep_group *prod[M__COUNT];	/* effective group: operation > path > API */
	struct ep_group *sandbox[M__COUNT];
	unsigned line, col;
};

struct api {
	char *file;
	char *title;
	char *version;
	char *base_path;		/* "/petstore/v1": leading '/', no trailing '/', "/" allowed */
	struct api_resource *res;
	size_t nres;
	struct ep_group *prod;		/* API level; may be NULL */
	struct ep_group *sandbox;
	struct ep_group **groups;	/* every group of this API: owns them */
	size_t ngroups;
	unsigned line, col;		/* of x-wso2-basePath */
};

/* Build an API from a parsed document. 'root' is the document's top mapping
 * (inline documents in a gateway file pass their own node). NULL on failure,
 * every problem appended to e. */
struct api *openapi_load(const struct cfg_doc *doc, const struct cfg_node *root, struct cfg_errors *e);
void api_free(struct api *a);

#endif
