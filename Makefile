EXTENSION   = notify_ext
EXTVERSION  = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)
PG_CONFIG  ?= pg_config

MODULE_big  = notify_ext
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# The SQL of the current version comes in two kinds of parts (see sql/README.md):
#   sql/schema/*.sql  objects that hold data: run once, by CREATE EXTENSION
#   sql/code/*.sql    functions, views, triggers and policies: re-runnable,
#                     run by CREATE EXTENSION and by every update
# The install script is schema then code; the update script from an older
# version is sql/updates/<old>--<current>.sql then code.  Scripts of
# released versions are kept as they were released, as sql/notify_ext--*.sql.
SCHEMA_PARTS = $(sort $(wildcard sql/schema/*.sql))
CODE_PARTS   = $(sort $(wildcard sql/code/*.sql))
UPDATES      = $(wildcard sql/updates/*--$(EXTVERSION).sql)
DATA_built   = sql/$(EXTENSION)--$(EXTVERSION).sql \
               $(patsubst sql/updates/%.sql,sql/$(EXTENSION)--%.sql,$(UPDATES))
DATA         = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*.sql))

PG_CPPFLAGS = -Isrc -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
# Each object is rebuilt when a header it includes changes.
PG_CFLAGS   = -MMD -MP
SHLIB_LINK  = -lsodium -lcurl -lnats

REGRESS      = $(sort $(notdir $(basename $(wildcard test/sql/*.sql))))
REGRESS_OPTS = --inputdir=test --outputdir=test --load-extension=$(EXTENSION)
ISOLATION      = $(sort $(notdir $(basename $(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test --outputdir=test/output_iso --load-extension=$(EXTENSION)

EXTRA_CLEAN = $(OBJS:.o=.d) test/results test/output_iso test/regression.diffs test/regression.out

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
-include $(OBJS:.o=.d)

SCRIPT_HEADER = printf '%s\n' '-- $(EXTENSION) $(1), assembled from sql/ by the Makefile; edit the parts, not this file.' \
	'\echo Use "$(2)" to load this file. \quit' ''

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SCHEMA_PARTS) $(CODE_PARTS) $(EXTENSION).control
	{ $(call SCRIPT_HEADER,$(EXTVERSION),CREATE EXTENSION $(EXTENSION)); cat $(SCHEMA_PARTS) $(CODE_PARTS); } > $@

sql/$(EXTENSION)--%--$(EXTVERSION).sql: sql/updates/%--$(EXTVERSION).sql $(CODE_PARTS) $(EXTENSION).control
	{ $(call SCRIPT_HEADER,$*--$(EXTVERSION),ALTER EXTENSION $(EXTENSION) UPDATE); cat $< $(CODE_PARTS); } > $@
