/* A region of a JPEG decoded without decoding the rest: libjpeg-turbo's jpeg_skip_scanlines (rows above the region
 * are entropy-decoded only, rows below not at all) and jpeg_crop_scanline (only the iMCU columns that cover it are
 * inverse-transformed and colour-converted), at a DCT scale of 1/1, 1/2, 1/4 or 1/8. No Python package exposes these
 * (PIL, simplejpeg and torchvision decode whole images), hence this glue; data/decode.py falls back to whole-image
 * decoding where it is not built.
 *
 * decode_crop(data, denom, top, left, height, width) -> bytearray of height x width x 3 RGB bytes, the box given in
 * the pixels of the image scaled by 1/denom. Any libjpeg error or warning (corrupt or truncated data) raises
 * ValueError with libjpeg's message, so the caller can fall back to a decoder that names the file. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

struct error_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void on_error(j_common_ptr cinfo) {
    struct error_mgr *err = (struct error_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) on_error(cinfo); /* a warning means corrupt data: refuse rather than return grey rows */
}

static PyObject *decode_crop(PyObject *self, PyObject *args) {
    Py_buffer data;
    unsigned int denom, top, left, height, width;
    if (!PyArg_ParseTuple(args, "y*IIIII", &data, &denom, &top, &left, &height, &width)) return NULL;
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8) {
        PyBuffer_Release(&data);
        return PyErr_Format(PyExc_ValueError, "denom must be 1, 2, 4 or 8, got %u", denom);
    }
    struct jpeg_decompress_struct cinfo;
    struct error_mgr err;
    PyObject *volatile out = NULL;
    JSAMPLE *volatile row = NULL;
    PyThreadState *volatile released = NULL;

    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.message[0] = '\0';
    if (setjmp(err.jump)) {
        if (released) PyEval_RestoreThread(released);
        jpeg_destroy_decompress(&cinfo);
        free(row);
        Py_XDECREF(out);
        PyBuffer_Release(&data);
        return PyErr_Format(PyExc_ValueError, "libjpeg: %s", err.message);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (const unsigned char *)data.buf, (unsigned long)data.len);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.scale_num = 1;
    cinfo.scale_denom = denom;
    cinfo.out_color_space = JCS_RGB;
    jpeg_calc_output_dimensions(&cinfo);
    if (width == 0 || height == 0 || left >= cinfo.output_width || width > cinfo.output_width - left ||
        top >= cinfo.output_height || height > cinfo.output_height - top) {
        PyErr_Format(PyExc_ValueError, "box (top %u, left %u, height %u, width %u) outside the %ux%u image",
                     top, left, height, width, cinfo.output_width, cinfo.output_height);
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&data);
        return NULL;
    }
    out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)height * width * 3);
    row = malloc((size_t)cinfo.output_width * 3);
    if (out == NULL || row == NULL) {
        jpeg_destroy_decompress(&cinfo);
        free(row);
        Py_XDECREF(out);
        PyBuffer_Release(&data);
        return out == NULL ? NULL : PyErr_NoMemory();
    }
    char *pixels = PyByteArray_AS_STRING(out);
    released = PyEval_SaveThread();
    jpeg_start_decompress(&cinfo);
    /* One iMCU more on each side than the box: libjpeg upsamples chroma at the window's edges as at the image's,
     * so the box's edge columns come out as in a whole decode only with neighbours decoded beside them. */
    JDIMENSION margin = (JDIMENSION)cinfo.max_h_samp_factor * cinfo.min_DCT_scaled_size;
    JDIMENSION xoffset = left > margin ? left - margin : 0;
    JDIMENSION cropped = (left + width + margin < cinfo.output_width ? left + width + margin : cinfo.output_width)
                         - xoffset;
    jpeg_crop_scanline(&cinfo, &xoffset, &cropped); /* widens to whole iMCUs: xoffset only moves left */
    if (top > 0) jpeg_skip_scanlines(&cinfo, top);
    for (unsigned int y = 0; y < height; y++) {
        JSAMPROW rows[1] = {row};
        jpeg_read_scanlines(&cinfo, rows, 1);
        memcpy(pixels + (size_t)y * width * 3, row + (size_t)(left - xoffset) * 3, (size_t)width * 3);
    }
    jpeg_abort_decompress(&cinfo); /* the rows below the box are never decoded */
    PyEval_RestoreThread(released);
    released = NULL;
    jpeg_destroy_decompress(&cinfo);
    free(row);
    PyBuffer_Release(&data);
    return out;
}

static PyMethodDef methods[] = {
    {"decode_crop", decode_crop, METH_VARARGS,
     "decode_crop(data, denom, top, left, height, width) -> bytearray: the box (in the image scaled by 1/denom) as "
     "height x width x 3 RGB bytes, decoding only the rows and iMCU columns it needs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpegcrop", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jpegcrop(void) { return PyModule_Create(&module); }
