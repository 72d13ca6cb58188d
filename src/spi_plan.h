/*
 * spi_plan.h: statements planned once per session.
 */
#ifndef NOTIFY_EXT_SPI_PLAN_H
#define NOTIFY_EXT_SPI_PLAN_H

#include "executor/spi.h"

/*
 * The saved generic plan of sql (prepared on first use, kept for the
 * session; PostgreSQL replans it when what it reads changes).  The caller
 * is connected to SPI.  Queries are written with schema-qualified names:
 * they are parsed under whatever search_path is in force the first time.
 */
extern SPIPlanPtr spi_plan(const char *sql, int nargs, Oid *argtypes);

/* Runs it: SPI_execute_plan() of spi_plan(sql, ...). */
extern int	spi_run(const char *sql, int nargs, Oid *argtypes, Datum *values,
					const char *nulls, bool read_only, long count);

#endif							/* NOTIFY_EXT_SPI_PLAN_H */
